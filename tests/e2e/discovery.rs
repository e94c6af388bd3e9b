//! AWS Organizations discovery against moto (PyPI `moto[server]`, one server
//! per test on a free loopback port): the organization is built with the
//! AWS SDK, Coverwatch assumes the role through moto's STS and walks it.

use crate::helpers::{TestApp, TestTenant, expect_status, free_port, python, spawn_app_with, workspace_root};
use aws_sdk_organizations::Client;
use aws_sdk_organizations::config::{BehaviorVersion, Credentials, Region};
use coverwatch_domain::clock::SystemClock;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(crate) struct Moto {
    pub(crate) url: String,
    _child: tokio::process::Child,
}

/// Starts a Python server of the test virtualenv on a free loopback port
/// (`args` get the port) and waits until `ready` (a path) answers.
async fn python_server(
    what: &str,
    args: impl FnOnce(&str) -> Vec<String>,
    ready: &str,
) -> (String, tokio::process::Child) {
    let port = free_port().to_string();
    let child = tokio::process::Command::new(python())
        .args(args(&port))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("{what} starts (make test installs it into .coverwatch/venv): {e}"));
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while reqwest::get(format!("{url}{ready}")).await.is_err() {
        assert!(Instant::now() < deadline, "{what} did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (url, child)
}

impl Moto {
    pub(crate) async fn start() -> Moto {
        let args = |port: &str| {
            ["-m", "moto.server", "-H", "127.0.0.1", "-p", port]
                .map(String::from)
                .to_vec()
        };
        let (url, child) = python_server("moto", args, "/moto-api/").await;
        Moto { url, _child: child }
    }

    /// The organization's management account, as the test's own AWS client.
    fn client(&self) -> Client {
        let config = aws_sdk_organizations::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(&self.url)
            .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
            .build();
        Client::from_conf(config)
    }
}

/// The only stand-in: a proxy in front of moto that throttles, denies a
/// subtree or a source, and refuses member roles (moto's STS accepts any).
pub(crate) struct FaultProxy {
    pub(crate) url: String,
    _child: tokio::process::Child,
}

impl FaultProxy {
    pub(crate) async fn start(upstream: &str) -> FaultProxy {
        let script = workspace_root().join("tests/tools/aws_fault_proxy.py");
        let args = |port: &str| {
            vec![
                script.display().to_string(),
                "--port".into(),
                port.into(),
                "--upstream".into(),
                upstream.into(),
            ]
        };
        let (url, child) = python_server("the fault proxy", args, "/_stats").await;
        FaultProxy { url, _child: child }
    }

    pub(crate) async fn faults(&self, rules: Value) {
        let response = reqwest::Client::new()
            .post(format!("{}/_faults", self.url))
            .json(&rules)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
    }

    pub(crate) async fn stats(&self) -> Value {
        reqwest::get(format!("{}/_stats", self.url))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

/// The rich organization of `tests/tools/aws_org.py`, built with boto3:
/// three-level OUs, a GuardDuty delegated administrator, an SCP on two OUs,
/// an organization trail and a Config aggregator.
pub(crate) async fn rich_organization(moto: &Moto) -> Value {
    let output = tokio::process::Command::new(python())
        .arg(workspace_root().join("tests/tools/aws_org.py"))
        .args(["rich", "--endpoint", &moto.url])
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

/// An app whose AWS SDK goes to `endpoint`, a tenant with organization
/// features, and the organization registered.
async fn registered(endpoint: &str, org_id: &str) -> (TestApp, TestTenant, String) {
    registered_on(endpoint, org_id, Arc::new(SystemClock)).await
}

/// The same, on `clock`, with due upkeep (settling, coverage history) every 100 ms.
pub(crate) async fn registered_on(
    endpoint: &str,
    org_id: &str,
    clock: Arc<dyn coverwatch_domain::clock::Clock>,
) -> (TestApp, TestTenant, String) {
    let endpoint = endpoint.to_owned();
    let app = spawn_app_with(clock, move |settings| {
        settings.subscribers.settle_interval_ms = 100;
        settings.aws.endpoint_url = Some(endpoint);
        settings.aws.access_key_id = Some("testing".into());
        settings.aws.secret_access_key = Some("testing".to_owned().into());
    })
    .await;
    let tenant = app.create_tenant("org-discovery").await;
    app.set_overrides(&tenant, json!({"org_features": true})).await;
    let base = register_organization(&app, &tenant, org_id).await;
    (app, tenant, base)
}

/// Registers the organization `org_id` (management account 123456789012)
/// and answers its path, `/v1/tenants/{t}/cloud-organizations/{id}`.
pub(crate) async fn register_organization(app: &TestApp, tenant: &TestTenant, org_id: &str) -> String {
    let org = expect_status(
        app.post(
            &format!("/v1/tenants/{}/cloud-organizations", tenant.id),
            &tenant.key,
            json!({"provider": "aws", "organization_id": org_id, "management_account_id": "123456789012",
                   "role_arn": "arn:aws:iam::123456789012:role/CoverwatchAudit", "name": "Acme"}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    format!(
        "/v1/tenants/{}/cloud-organizations/{}",
        tenant.id,
        org["id"].as_str().unwrap()
    )
}

async fn event_count(app: &TestApp, event_type: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = $1")
        .bind(event_type)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

struct Built {
    org_id: String,
    /// account name → id
    accounts: std::collections::BTreeMap<String, String>,
    ous: std::collections::BTreeMap<String, String>,
}

/// Root ─ Production ─ Web ─ Api, Root ─ Sandbox; accounts placed in them.
async fn build_organization(aws: &Client) -> Built {
    let org = aws
        .create_organization()
        .feature_set(aws_sdk_organizations::types::OrganizationFeatureSet::All)
        .send()
        .await
        .unwrap();
    let org_id = org.organization().unwrap().id().unwrap().to_owned();
    let root = aws.list_roots().send().await.unwrap().roots()[0]
        .id()
        .unwrap()
        .to_owned();
    let mut ous: std::collections::BTreeMap<String, String> = std::collections::BTreeMap::new();
    for (name, parent) in [
        ("Production", "Root"),
        ("Web", "Production"),
        ("Api", "Web"),
        ("Sandbox", "Root"),
    ] {
        let parent_id = if parent == "Root" {
            root.clone()
        } else {
            ous[parent].clone()
        };
        let ou = aws
            .create_organizational_unit()
            .parent_id(parent_id)
            .name(name)
            .send()
            .await
            .unwrap();
        ous.insert(
            name.to_owned(),
            ou.organizational_unit().unwrap().id().unwrap().to_owned(),
        );
    }
    let mut accounts = std::collections::BTreeMap::new();
    for (name, ou) in [
        ("web-1", "Web"),
        ("api-1", "Api"),
        ("api-2", "Api"),
        ("sandbox-1", "Sandbox"),
    ] {
        let created = aws
            .create_account()
            .account_name(name)
            .email(format!("{name}@acme.test"))
            .send()
            .await
            .unwrap();
        let id = created
            .create_account_status()
            .unwrap()
            .account_id()
            .unwrap()
            .to_owned();
        aws.move_account()
            .account_id(&id)
            .source_parent_id(&root)
            .destination_parent_id(&ous[ou])
            .send()
            .await
            .unwrap();
        accounts.insert(name.to_owned(), id);
    }
    Built { org_id, accounts, ous }
}

pub(crate) async fn discover(app: &TestApp, tenant: &TestTenant, org: &str) -> Value {
    let started = expect_status(
        app.post(
            &format!("/v1/tenants/{}/cloud-organizations/{org}/discover", tenant.id),
            &tenant.key,
            json!({}),
        )
        .await,
        StatusCode::ACCEPTED,
    )
    .await;
    let run_path = format!(
        "/v1/tenants/{}/cloud-organizations/{org}/discover/{}",
        tenant.id,
        started["run_id"].as_str().unwrap()
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let run = expect_status(app.get(&run_path, &tenant.key).await, StatusCode::OK).await;
        if run["status"] != "running" {
            return run;
        }
        assert!(Instant::now() < deadline, "discovery did not finish: {run}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every path of `GET {base}/hierarchy`'s tree, depth first.
async fn hierarchy_paths(app: &TestApp, tenant: &TestTenant, base: &str) -> Vec<String> {
    fn walk(node: &Value, out: &mut Vec<String>) {
        out.push(node["path"].as_str().unwrap().to_owned());
        for child in node["children"].as_array().unwrap() {
            walk(child, out);
        }
    }
    let tree = expect_status(app.get(&format!("{base}/hierarchy"), &tenant.key).await, StatusCode::OK).await;
    let mut found = vec![];
    walk(&tree, &mut found);
    found
}

#[tokio::test]
async fn discovery_records_the_hierarchy_with_paths_and_rediscovery_records_moves() {
    let moto = Moto::start().await;
    let aws = moto.client();
    let built = build_organization(&aws).await;
    let (app, tenant, base) = registered(&moto.url, &built.org_id).await;
    let org_id = base.rsplit('/').next().unwrap();

    let run = discover(&app, &tenant, org_id).await;
    assert_eq!(run["status"], "done", "{run}");
    assert_eq!(run["ous"], 4);
    // The four accounts plus the management account itself.
    assert_eq!(run["accounts"], 5);
    assert!(
        run["pages"].as_i64().unwrap() >= 11,
        "roots, OUs and accounts per parent: {run}"
    );

    let found = hierarchy_paths(&app, &tenant, &base).await;
    assert_eq!(
        found,
        [
            "Root",
            "Root/Production",
            "Root/Production/Web",
            "Root/Production/Web/Api",
            "Root/Sandbox"
        ]
    );
    let production = expect_status(
        app.get(&format!("{base}/members?path_prefix=Root/Production"), &tenant.key)
            .await,
        StatusCode::OK,
    )
    .await;
    let members: Vec<(&str, &str)> = production["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["account_id"].as_str().unwrap(), m["path"].as_str().unwrap()))
        .collect();
    assert_eq!(
        members,
        [
            (built.accounts["web-1"].as_str(), "Root/Production/Web"),
            (
                built.accounts["api-1"].as_str().min(built.accounts["api-2"].as_str()),
                "Root/Production/Web/Api"
            ),
            (
                built.accounts["api-1"].as_str().max(built.accounts["api-2"].as_str()),
                "Root/Production/Web/Api"
            ),
        ]
    );
    // The whole list a page at a time (two per page): the same members in
    // the same order, by path then account id.
    let everyone = expect_status(
        app.get(&format!("{base}/members?limit=500"), &tenant.key).await,
        StatusCode::OK,
    )
    .await;
    assert!(everyone["next_cursor"].is_null());
    let mut paged = vec![];
    let mut next = format!("{base}/members?limit=2");
    loop {
        let page = expect_status(app.get(&next, &tenant.key).await, StatusCode::OK).await;
        paged.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(cursor) => next = format!("{base}/members?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(Value::from(paged), everyone["items"]);
    assert_eq!(everyone["items"].as_array().unwrap().len(), 5);
    for bad in [
        "status=active",
        "aws_status=active",
        "cursor=zz",
        "cursor=6869",
        "limit=501",
    ] {
        let response = app.get(&format!("{base}/members?{bad}"), &tenant.key).await;
        expect_status(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    }
    let listed = expect_status(
        app.get(&format!("/v1/tenants/{}/cloud-organizations", tenant.id), &tenant.key)
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(listed["items"][0]["status"], "connected");

    // api-2 moves to Sandbox: re-discovery records the move as an event.
    aws.move_account()
        .account_id(&built.accounts["api-2"])
        .source_parent_id(&built.ous["Api"])
        .destination_parent_id(&built.ous["Sandbox"])
        .send()
        .await
        .unwrap();
    let run = discover(&app, &tenant, org_id).await;
    assert_eq!(run["status"], "done", "{run}");
    let moved: Vec<Value> =
        sqlx::query_scalar("SELECT payload::jsonb FROM events WHERE event_type = 'MemberAccountMoved'")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(moved.len(), 1);
    assert_eq!(moved[0]["MemberAccountMoved"]["from_path"], "Root/Production/Web/Api");
    assert_eq!(
        moved[0]["MemberAccountMoved"]["account"]["id"],
        built.accounts["api-2"].as_str()
    );
    let sandbox = expect_status(
        app.get(&format!("{base}/members?path_prefix=Root/Sandbox"), &tenant.key)
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(sandbox["items"].as_array().unwrap().len(), 2);
    let found: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'MemberAccountFound'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(found, 5, "the second run found nothing new");

    // Connect the Production subtree with room for two accounts: each role is
    // assumed through STS, two connect, the third is refused by the plan.
    app.set_overrides(&tenant, json!({"max_accounts": 2})).await;
    let connected = expect_status(
        app.post(
            &format!("{base}/members/connect"),
            &tenant.key,
            json!({"path_prefix": "Root/Production", "environment": "staging"}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    let statuses: Vec<(&str, &str)> = connected["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["account_id"].as_str().unwrap(), r["status"].as_str().unwrap()))
        .collect();
    assert_eq!(statuses.len(), 2, "api-2 moved out of Production: {statuses:?}");
    assert!(
        statuses.iter().all(|(_, status)| *status == "connected"),
        "{statuses:?}"
    );
    let refused = expect_status(
        app.post(
            &format!("{base}/members/connect"),
            &tenant.key,
            json!({"account_ids": [built.accounts["sandbox-1"]]}),
        )
        .await,
        StatusCode::PAYMENT_REQUIRED,
    )
    .await;
    assert_eq!(refused["metric"], "cloud_accounts");
    let lifecycles = expect_status(
        app.get(&format!("{base}/members?status=connected"), &tenant.key).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(lifecycles["items"].as_array().unwrap().len(), 2);
    let accounts = expect_status(
        app.get(
            &format!("/v1/tenants/{}/cloud-accounts?environment=staging", tenant.id),
            &tenant.key,
        )
        .await,
        StatusCode::OK,
    )
    .await;
    let item = &accounts["items"][0];
    assert_eq!(item["source"], "organization");
    assert_eq!(item["organization_id"], org_id);
    assert!(item["role_arn"].as_str().unwrap().ends_with(":role/CoverwatchAudit"));

    // Disconnecting one frees a slot; it stays discovered.
    expect_status(
        app.post(
            &format!("{base}/members/{}/disconnect", built.accounts["web-1"]),
            &tenant.key,
            json!({}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    let web = expect_status(
        app.get(
            &format!("{base}/members?path_prefix=Root/Production/Web&status=discovered"),
            &tenant.key,
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(web["items"].as_array().unwrap().len(), 1);
    let sandbox = expect_status(
        app.post(
            &format!("{base}/members/connect"),
            &tenant.key,
            json!({"account_ids": [built.accounts["sandbox-1"]]}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(sandbox["results"][0]["status"], "connected");

    let detail = expect_status(app.get(&base, &tenant.key).await, StatusCode::OK).await;
    assert_eq!(detail["status"], "connected");
    assert_eq!(detail["organizational_units"], 4);
    assert_eq!(detail["members"], 5);
    assert_eq!(detail["connected_members"], 2);
    assert_eq!(detail["last_discovery"]["status"], "done");

    let usage = expect_status(
        app.get(&format!("/v1/tenants/{}/usage", tenant.id), &tenant.key).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(usage["metrics"]["discovery_runs"]["used"], 2);
    assert_eq!(usage["metrics"]["cloud_accounts"]["used"], 2);
}

#[tokio::test]
async fn discovery_records_delegated_admins_scps_and_organization_sources_exactly() {
    let moto = Moto::start().await;
    let built = rich_organization(&moto).await;
    let (app, tenant, base) = registered(&moto.url, built["org_id"].as_str().unwrap()).await;
    let org = base.rsplit('/').next().unwrap().to_owned();
    let run = discover(&app, &tenant, &org).await;
    assert_eq!(run["status"], "done", "{run}");
    assert_eq!(run["ous"], 5);
    assert_eq!(run["accounts"], 6, "five members and the management account");

    let detail = expect_status(app.get(&base, &tenant.key).await, StatusCode::OK).await;
    assert_eq!(detail["status"], "connected");
    assert_eq!(detail["discovery_status"], "connected");
    let accounts = &built["accounts"];
    assert_eq!(
        detail["delegated_administrators"],
        json!([{"account_id": accounts["security"], "name": "security",
                "service_principals": ["guardduty.amazonaws.com"]}])
    );
    // The custom SCP with exactly its two OUs; AWS's FullAWSAccess is listed
    // as AWS-managed. Neither is a detection source.
    let policies = detail["service_control_policies"].as_array().unwrap();
    let deny = policies
        .iter()
        .find(|p| p["name"] == "DenyLeaveOrganization")
        .expect("the custom SCP");
    assert_eq!(deny["id"], built["policy"]);
    assert_eq!(deny["aws_managed"], false);
    let mut expected_targets = vec![
        json!({"target_id": built["ous"]["Production"], "kind": "ORGANIZATIONAL_UNIT", "name": "Production"}),
        json!({"target_id": built["ous"]["Sandbox"], "kind": "ORGANIZATIONAL_UNIT", "name": "Sandbox"}),
    ];
    expected_targets.sort_by_key(|t| t["target_id"].as_str().unwrap().to_owned());
    assert_eq!(deny["targets"], json!(expected_targets));
    assert!(
        policies
            .iter()
            .any(|p| p["name"] == "FullAWSAccess" && p["aws_managed"] == true),
        "{policies:?}"
    );
    // Sources: the organization trail (not the account trail), the
    // organization aggregator and GuardDuty's administrator. Security Hub is
    // absent: moto cannot make it a delegated administrator (README).
    assert_eq!(
        detail["sources"],
        json!([
            {"source_id": built["trail_arn"], "kind": "cloudtrail_organization_trail", "name": "org-trail",
             "account_id": "123456789012",
             "detail": {"kind": "cloudtrail_organization_trail", "home_region": "us-east-1", "multi_region": true,
                        "logging": true, "s3_bucket": "acme-org-trail"}},
            {"source_id": built["aggregator_arn"], "kind": "config_aggregator", "name": "org-aggregator",
             "account_id": "123456789012",
             "detail": {"kind": "config_aggregator", "organization": true, "account_ids": [], "all_regions": true,
                        "regions": []}},
            {"source_id": format!("guardduty:{}", accounts["security"].as_str().unwrap()), "kind": "guardduty",
             "name": "GuardDuty delegated administrator", "account_id": accounts["security"],
             "detail": {"kind": "guardduty", "administrator_account_id": accounts["security"]}},
        ])
    );
    let found = hierarchy_paths(&app, &tenant, &base).await;
    assert_eq!(
        found,
        [
            "Root",
            "Root/Production",
            "Root/Production/Web",
            "Root/Production/Web/Api",
            "Root/Sandbox",
            "Root/Security"
        ]
    );

    // sandbox-1 is closed (SUSPENDED) and the trail stops logging: the next
    // run records both as changes; nothing else is recorded again.
    let closed = tokio::process::Command::new(python())
        .args([
            "-c",
            &format!(
                "import boto3; kw=dict(endpoint_url='{url}', region_name='us-east-1', aws_access_key_id='testing', \
             aws_secret_access_key='testing'); boto3.client('organizations', **kw).close_account(AccountId='{id}'); \
             boto3.client('cloudtrail', **kw).stop_logging(Name='org-trail')",
                url = moto.url,
                id = accounts["sandbox-1"].as_str().unwrap()
            ),
        ])
        .status()
        .await
        .unwrap();
    assert!(closed.success());
    let run = discover(&app, &tenant, &org).await;
    assert_eq!(run["status"], "done", "{run}");
    assert_eq!(event_count(&app, "MemberAccountStatusChanged").await, 1);
    assert_eq!(event_count(&app, "OrganizationSourceChanged").await, 1);
    assert_eq!(event_count(&app, "OrganizationSourceFound").await, 3);
    assert_eq!(event_count(&app, "ServiceControlPoliciesChanged").await, 1);
    assert_eq!(event_count(&app, "DelegatedAdministratorsChanged").await, 1);
    let detail = expect_status(app.get(&base, &tenant.key).await, StatusCode::OK).await;
    assert_eq!(detail["sources"][0]["detail"]["logging"], false);
    let suspended = expect_status(
        app.get(&format!("{base}/members?aws_status=SUSPENDED"), &tenant.key)
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(suspended["items"][0]["account_id"], accounts["sandbox-1"]);
    // A suspended account is recorded but cannot be connected.
    let refused = expect_status(
        app.post(
            &format!("{base}/members/connect"),
            &tenant.key,
            json!({"account_ids": [accounts["sandbox-1"]]}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(refused["results"][0]["status"], "error");
    assert!(refused["results"][0]["reason"].as_str().unwrap().contains("SUSPENDED"));
    assert_eq!(event_count(&app, "MemberConnectionsRequested").await, 0);
}

#[tokio::test]
async fn throttling_is_retried_and_an_unreadable_subtree_or_source_gives_partial() {
    let moto = Moto::start().await;
    let built = rich_organization(&moto).await;
    let proxy = FaultProxy::start(&moto.url).await;
    let (app, tenant, base) = registered(&proxy.url, built["org_id"].as_str().unwrap()).await;
    let org = base.rsplit('/').next().unwrap().to_owned();

    // Throttled calls of four kinds: the SDK backs off and retries them.
    proxy
        .faults(
            json!({"throttle": {"ListAccountsForParent": 3, "ListOrganizationalUnitsForParent": 2,
                                     "DescribeTrails": 1, "ListRoots": 1}}),
        )
        .await;
    let run = discover(&app, &tenant, &org).await;
    assert_eq!(run["status"], "done", "{run}");
    assert_eq!(run["errors"], json!([]));
    assert_eq!(run["ous"], 5);
    assert_eq!(run["accounts"], 6);
    let stats = proxy.stats().await;
    assert_eq!(
        stats["throttled"],
        json!({"ListAccountsForParent": 3, "ListOrganizationalUnitsForParent": 2, "DescribeTrails": 1,
               "ListRoots": 1})
    );
    // Each parent was read once in the end: six parents, one page each.
    assert_eq!(stats["forwarded"]["ListAccountsForParent"], 6);
    let detail = expect_status(app.get(&base, &tenant.key).await, StatusCode::OK).await;
    assert_eq!(detail["status"], "connected");
    assert_eq!(detail["sources"].as_array().unwrap().len(), 3);

    // Sandbox cannot be listed and Config is denied: the run is partial,
    // says what it missed, and removes nothing it could not see.
    let sandbox = built["ous"]["Sandbox"].as_str().unwrap();
    proxy
        .faults(json!({"deny_parents": [sandbox], "deny_operations": ["DescribeConfigurationAggregators"]}))
        .await;
    let run = discover(&app, &tenant, &org).await;
    assert_eq!(run["status"], "partial", "{run}");
    let errors: Vec<&str> = run["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("Root/Sandbox: ListOrganizationalUnitsForParent: AccessDeniedException"))
    );
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("Config DescribeConfigurationAggregators: AccessDeniedException"))
    );
    let detail = expect_status(app.get(&base, &tenant.key).await, StatusCode::OK).await;
    assert_eq!(detail["status"], "partial");
    assert_eq!(detail["discovery_status"], "partial");
    assert_eq!(detail["members"], 6, "sandbox-1 is kept");
    assert_eq!(detail["sources"].as_array().unwrap().len(), 3, "the aggregator is kept");
    assert_eq!(event_count(&app, "MemberAccountRemoved").await, 0);
    assert_eq!(event_count(&app, "OrganizationSourceRemoved").await, 0);
    let sandbox_members = expect_status(
        app.get(&format!("{base}/members?path_prefix=Root/Sandbox"), &tenant.key)
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        sandbox_members["items"][0]["account_id"],
        built["accounts"]["sandbox-1"]
    );

    // Everything readable again: connected.
    proxy.faults(json!({})).await;
    let run = discover(&app, &tenant, &org).await;
    assert_eq!(run["status"], "done", "{run}");
    let detail = expect_status(app.get(&base, &tenant.key).await, StatusCode::OK).await;
    assert_eq!(detail["status"], "connected");
}

#[tokio::test]
async fn the_organization_status_follows_the_selected_members_connections() {
    let moto = Moto::start().await;
    let built = rich_organization(&moto).await;
    let proxy = FaultProxy::start(&moto.url).await;
    let (app, tenant, base) = registered(&proxy.url, built["org_id"].as_str().unwrap()).await;
    let org = base.rsplit('/').next().unwrap().to_owned();
    assert_eq!(discover(&app, &tenant, &org).await["status"], "done");
    app.set_overrides(&tenant, json!({"org_features": true, "max_accounts": 10}))
        .await;
    let accounts = &built["accounts"];
    let role = |name: &str| format!("arn:aws:iam::{}:role/CoverwatchAudit", accounts[name].as_str().unwrap());
    // api-1's audit role cannot be assumed; web-1 and api-2's can.
    proxy.faults(json!({"deny_roles": [role("api-1")]})).await;
    let result = expect_status(
        app.post(
            &format!("{base}/members/connect"),
            &tenant.key,
            json!({"path_prefix": "Root/Production"}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    let outcome: std::collections::BTreeMap<String, String> = result["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["account_id"].as_str().unwrap().to_owned(),
                r["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(outcome.len(), 3);
    assert_eq!(outcome[accounts["api-1"].as_str().unwrap()], "error");
    assert_eq!(outcome[accounts["web-1"].as_str().unwrap()], "connected");
    assert_eq!(outcome[accounts["api-2"].as_str().unwrap()], "connected");
    let failed = expect_status(
        app.get(&format!("{base}/members?status=error"), &tenant.key).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(failed["items"][0]["account_id"], accounts["api-1"]);
    assert!(
        failed["items"][0]["status_reason"]
            .as_str()
            .unwrap()
            .starts_with("AccessDenied: User is not authorized to perform: sts:AssumeRole"),
        "{failed}"
    );
    let detail = expect_status(app.get(&base, &tenant.key).await, StatusCode::OK).await;
    assert_eq!(detail["status"], "partial", "one selected member failed");
    assert_eq!(detail["connected_members"], 2);
    assert_eq!(detail["failed_members"], 1);

    // Disconnect the two that connected: only the failed one is selected.
    for name in ["web-1", "api-2"] {
        let member = expect_status(
            app.post(
                &format!("{base}/members/{}/disconnect", accounts[name].as_str().unwrap()),
                &tenant.key,
                json!({}),
            )
            .await,
            StatusCode::OK,
        )
        .await;
        assert_eq!(member["lifecycle"], "discovered");
    }
    let detail = expect_status(app.get(&base, &tenant.key).await, StatusCode::OK).await;
    assert_eq!(detail["status"], "error", "every selected member failed");

    // Deselecting the failed member too restores connected.
    let member = expect_status(
        app.post(
            &format!("{base}/members/{}/disconnect", accounts["api-1"].as_str().unwrap()),
            &tenant.key,
            json!({}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(member["lifecycle"], "discovered");
    let detail = expect_status(app.get(&base, &tenant.key).await, StatusCode::OK).await;
    assert_eq!(detail["status"], "connected");
    let changes: Vec<Value> = sqlx::query_scalar(
        "SELECT payload::jsonb -> 'OrganizationStatusChanged' -> 'to' FROM events
          WHERE event_type = 'OrganizationStatusChanged' ORDER BY position",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        changes,
        [json!("connected"), json!("partial"), json!("error"), json!("connected")]
    );
}

#[tokio::test]
async fn a_role_in_another_organization_reads_nothing_and_is_an_error() {
    let moto = Moto::start().await;
    let built = rich_organization(&moto).await;
    let (app, tenant, base) = registered(&moto.url, "o-aaaaaaaaaa").await;
    let org = base.rsplit('/').next().unwrap().to_owned();
    let run = discover(&app, &tenant, &org).await;
    assert_eq!(run["status"], "failed", "{run}");
    assert_eq!(
        run["errors"],
        json!([format!(
            "the role belongs to organization {}, not o-aaaaaaaaaa",
            built["org_id"].as_str().unwrap()
        )])
    );
    let detail = expect_status(app.get(&base, &tenant.key).await, StatusCode::OK).await;
    assert_eq!(detail["status"], "error");
    assert_eq!(detail["members"], 0);
    assert_eq!(detail["sources"], json!([]));
}

/// An account removed from the AWS organization, or closed (AWS lists it as
/// SUSPENDED), leaves the organization's coverage when discovery sees it:
/// it is disconnected (no longer counted in union, minimum, inherited
/// detections or the plan), stays listed, and the tenant may keep it as a
/// standalone account by connecting it again.
#[tokio::test]
async fn accounts_that_leave_or_close_leave_the_organizations_coverage() {
    let moto = Moto::start().await;
    let aws = moto.client();
    let built = build_organization(&aws).await;
    let (app, tenant, base) = registered(&moto.url, &built.org_id).await;
    app.set_overrides(&tenant, json!({"max_accounts": "unlimited"})).await;
    let org = base.rsplit('/').next().unwrap().to_owned();
    assert_eq!(discover(&app, &tenant, &org).await["status"], "done");
    let connected = expect_status(
        app.post(
            &format!("{base}/members/connect"),
            &tenant.key,
            json!({"all_active": true}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    // The four member accounts and the management account.
    assert_eq!(connected["results"].as_array().unwrap().len(), 5, "{connected}");
    expect_status(
        app.post(
            &format!("/v1/tenants/{}/detections", tenant.id),
            &tenant.key,
            json!({"name": "everywhere", "source": "custom", "techniques": [{"id": "T1530", "confidence": 0.9}],
                   "scope": {"type": "organization", "organization_id": org, "accounts": "all"}}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let coverage = format!("/v1/tenants/{}/coverage/organizations/{org}", tenant.id);
    let accounts_in = |body: &Value| -> Vec<String> {
        body["accounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["account_id"].as_str().unwrap().to_owned())
            .collect()
    };
    let before = expect_status(app.get(&coverage, &tenant.key).await, StatusCode::OK).await;
    assert_eq!(accounts_in(&before).len(), 5);

    let (left, closed) = (built.accounts["api-1"].clone(), built.accounts["web-1"].clone());
    aws.remove_account_from_organization()
        .account_id(&left)
        .send()
        .await
        .unwrap();
    aws.close_account().account_id(&closed).send().await.unwrap();
    assert_eq!(discover(&app, &tenant, &org).await["status"], "done");

    let after = expect_status(app.get(&coverage, &tenant.key).await, StatusCode::OK).await;
    let mut expected = vec![
        "123456789012".to_owned(),
        built.accounts["api-2"].clone(),
        built.accounts["sandbox-1"].clone(),
    ];
    expected.sort();
    assert_eq!(accounts_in(&after), expected, "{after}");
    assert_eq!(after["minimum"]["covered"], 1, "the accounts left all inherit it");
    for gone in [&left, &closed] {
        let read = app
            .get(
                &format!("/v1/tenants/{}/coverage/accounts/{gone}", tenant.id),
                &tenant.key,
            )
            .await;
        assert_eq!(read.status(), StatusCode::NOT_FOUND, "{gone} no longer counts");
    }
    let listed = expect_status(
        app.get(
            &format!("/v1/tenants/{}/cloud-accounts?status=disconnected", tenant.id),
            &tenant.key,
        )
        .await,
        StatusCode::OK,
    )
    .await;
    let mut disconnected: Vec<String> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["account_id"].as_str().unwrap().to_owned())
        .collect();
    disconnected.sort();
    let mut departed = vec![left.clone(), closed.clone()];
    departed.sort();
    assert_eq!(disconnected, departed);
    let usage = expect_status(
        app.get(&format!("/v1/tenants/{}/usage", tenant.id), &tenant.key).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(usage["metrics"]["cloud_accounts"]["used"], 3);

    // The tenant keeps the account that left, by choice, as a standalone one.
    expect_status(
        app.post(
            &format!("/v1/tenants/{}/cloud-accounts", tenant.id),
            &tenant.key,
            json!({"account_id": left, "region": "us-east-1", "environment": "production",
                   "role_arn": format!("arn:aws:iam::{left}:role/CoverwatchAudit")}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let standalone = expect_status(
        app.get(
            &format!("/v1/tenants/{}/coverage/accounts/{left}", tenant.id),
            &tenant.key,
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(standalone["organization_id"], Value::Null);
    assert_eq!(standalone["org_techniques"], json!([]), "it inherits nothing any more");
}
