//! AWS Organizations discovery against moto (PyPI `moto[server]`, one server
//! per test on a free loopback port): the organization is built with the
//! AWS SDK, Coverwatch assumes the role through moto's STS and walks it.

use crate::helpers::{TestApp, TestTenant, expect_status, free_port, python, spawn_app_with};
use aws_sdk_organizations::Client;
use aws_sdk_organizations::config::{BehaviorVersion, Credentials, Region};
use coverwatch_domain::clock::SystemClock;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Moto {
    url: String,
    _child: tokio::process::Child,
}

impl Moto {
    async fn start() -> Moto {
        let port = free_port();
        let child = tokio::process::Command::new(python())
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("moto starts (make test installs it into .coverwatch/venv)");
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while reqwest::get(format!("{url}/moto-api/")).await.is_err() {
            assert!(Instant::now() < deadline, "moto did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
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

async fn discover(app: &TestApp, tenant: &TestTenant, org: &str) -> Value {
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

fn paths(node: &Value, out: &mut Vec<String>) {
    out.push(node["path"].as_str().unwrap().to_owned());
    for child in node["children"].as_array().unwrap() {
        paths(child, out);
    }
}

#[tokio::test]
async fn discovery_records_the_hierarchy_with_paths_and_rediscovery_records_moves() {
    let moto = Moto::start().await;
    let aws = moto.client();
    let built = build_organization(&aws).await;
    let endpoint = moto.url.clone();
    let app = spawn_app_with(Arc::new(SystemClock), move |settings| {
        settings.aws_endpoint_url = Some(endpoint);
        settings.aws_access_key_id = Some("testing".into());
        settings.aws_secret_access_key = Some("testing".to_owned().into());
    })
    .await;
    let tenant = app.create_tenant("org-discovery").await;
    app.set_overrides(&tenant, json!({"org_features": true})).await;
    let org = expect_status(
        app.post(
            &format!("/v1/tenants/{}/cloud-organizations", tenant.id),
            &tenant.key,
            json!({"provider": "aws", "organization_id": built.org_id, "management_account_id": "123456789012",
                   "role_arn": "arn:aws:iam::123456789012:role/CoverwatchAudit", "name": "Acme"}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let org_id = org["id"].as_str().unwrap();

    let run = discover(&app, &tenant, org_id).await;
    assert_eq!(run["status"], "done", "{run}");
    assert_eq!(run["ous"], 4);
    // The four accounts plus the management account itself.
    assert_eq!(run["accounts"], 5);
    assert!(
        run["pages"].as_i64().unwrap() >= 11,
        "roots, OUs and accounts per parent: {run}"
    );

    let base = format!("/v1/tenants/{}/cloud-organizations/{org_id}", tenant.id);
    let tree = expect_status(app.get(&format!("{base}/hierarchy"), &tenant.key).await, StatusCode::OK).await;
    let mut found = vec![];
    paths(&tree, &mut found);
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
    let members: Vec<(&str, &str)> = production
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
    assert_eq!(sandbox.as_array().unwrap().len(), 2);
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
    assert_eq!(lifecycles.as_array().unwrap().len(), 2);
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
    assert_eq!(web.as_array().unwrap().len(), 1);
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
