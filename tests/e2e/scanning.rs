//! Account scanning against moto (one per test), with the fault proxy only
//! for what moto lacks (said where used): account:ListRegions, Security Hub
//! standards and controls, Access Analyzer analyzers and Config conformance
//! packs are canned by the proxy; denied calls are the proxy's. Detections
//! are deployed with boto3 (`tests/tools/aws_scan.py`); the expected
//! coverage is computed here from the shipped mapping data, independently
//! of the product's mapping code.

use crate::discovery::{FaultProxy, Moto};
use crate::helpers::{TestApp, TestTenant, expect_problem, expect_status, python, spawn_app_with, workspace_root};
use coverwatch_domain::clock::SystemClock;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(crate) struct Aws {
    pub(crate) moto: Moto,
    pub(crate) proxy: FaultProxy,
}

pub(crate) async fn aws() -> Aws {
    let moto = Moto::start().await;
    let proxy = FaultProxy::start(&moto.url).await;
    Aws { moto, proxy }
}

/// Deploys `plan` (see `tests/tools/aws_scan.py`) into moto.
pub(crate) async fn seed(moto: &Moto, plan: &Value) {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(python())
        .arg(workspace_root().join("tests/tools/aws_scan.py"))
        .args(["seed", "--endpoint", &moto.url])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(plan.to_string().as_bytes())
        .await
        .unwrap();
    let output = child.wait_with_output().await.unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
}

/// An app whose AWS calls go through the proxy, with a tenant that may
/// connect accounts.
pub(crate) async fn scanning_app(
    aws: &Aws,
    configure: impl FnOnce(&mut coverwatch_api::Settings) + Send + 'static,
) -> (TestApp, TestTenant) {
    let endpoint = aws.proxy.url.clone();
    let app = spawn_app_with(Arc::new(SystemClock), move |settings| {
        settings.aws.endpoint_url = Some(endpoint);
        settings.aws.requests_per_second = 0.0;
        settings.jobs.heartbeat_secs = 2;
        configure(settings);
    })
    .await;
    let tenant = app.create_tenant("scanned").await;
    app.set_overrides(&tenant, json!({"max_accounts": "unlimited", "org_features": true}))
        .await;
    (app, tenant)
}

pub(crate) async fn connect(app: &TestApp, tenant: &TestTenant, account: &str) -> Value {
    expect_status(
        app.post(
            &format!("/v1/tenants/{}/cloud-accounts", tenant.id),
            &tenant.key,
            json!({"account_id": account, "region": "us-east-1",
                   "role_arn": format!("arn:aws:iam::{account}:role/CoverwatchAudit"), "environment": "production"}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await
}

/// Starts a scan of one account and waits for its run to finish.
pub(crate) async fn scan(app: &TestApp, tenant: &TestTenant, account: &str) -> Value {
    let started = app
        .post(
            &format!("/v1/tenants/{}/cloud-accounts/{account}/scan", tenant.id),
            &tenant.key,
            json!({}),
        )
        .await;
    let location = started.headers()["location"].to_str().unwrap().to_owned();
    expect_status(started, StatusCode::ACCEPTED).await;
    finished(app, tenant, &location).await
}

pub(crate) async fn finished(app: &TestApp, tenant: &TestTenant, location: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let run = expect_status(app.get(location, &tenant.key).await, StatusCode::OK).await;
        if run["status"] == "done" {
            return run;
        }
        assert!(Instant::now() < deadline, "the scan did not finish: {run}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The account's coverage response and the techniques it covers.
async fn account_coverage(app: &TestApp, tenant: &TestTenant) -> (Value, BTreeSet<String>) {
    let coverage = expect_status(
        app.get(
            &format!("/v1/tenants/{}/coverage/accounts/{ACCOUNT}", tenant.id),
            &tenant.key,
        )
        .await,
        StatusCode::OK,
    )
    .await;
    let covered = coverage["account_techniques"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_owned())
        .collect();
    (coverage, covered)
}

async fn inventory_events(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_type = 'account_inventory'")
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

/// The shipped mapping data, read here independently of the product.
struct Mappings {
    data: BTreeMap<&'static str, Value>,
    ctid: Value,
    cloud: BTreeSet<String>,
}

impl Mappings {
    fn load() -> Self {
        let read = |path: &str| -> Value {
            serde_json::from_str(&std::fs::read_to_string(workspace_root().join(path)).unwrap()).unwrap()
        };
        let mut data = BTreeMap::new();
        for (name, file) in [
            ("guardduty", "domain/data/scanning/guardduty-finding-types.json"),
            ("securityhub", "domain/data/scanning/securityhub-controls.json"),
            ("config", "domain/data/scanning/config-managed-rules.json"),
            ("cis", "domain/data/scanning/cis-metric-filters.json"),
            ("eventbridge", "domain/data/scanning/eventbridge-events.json"),
        ] {
            data.insert(name, read(file));
        }
        let catalog = read("domain/data/attack/enterprise-attack-18.1.json");
        let cloud = ["IaaS", "SaaS", "Office Suite", "Identity Provider"];
        let cloud = catalog["techniques"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| {
                t["platforms"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|p| cloud.contains(&p.as_str().unwrap()))
            })
            .map(|t| t["id"].as_str().unwrap().to_owned())
            .collect();
        Self {
            data,
            ctid: read("domain/data/attack/ctid-security-stack-mappings.json"),
            cloud,
        }
    }

    /// Techniques a list of `[technique, confidence]` pairs covers (≥ partial).
    fn covering(pairs: &Value) -> Vec<String> {
        pairs
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p[1] != "minimal")
            .map(|p| p[0].as_str().unwrap().to_owned())
            .collect()
    }

    fn guardduty(&self, feature: &str) -> Vec<String> {
        self.data["guardduty"]["finding_types"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["feature"] == feature)
            .flat_map(|t| Self::covering(&t["techniques"]))
            .collect()
    }

    fn rule(&self, file: &str, list: &str, key: &str, id: &str) -> Vec<String> {
        self.data[file][list]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r[key] == id)
            .flat_map(|r| Self::covering(&r["techniques"]))
            .collect()
    }

    fn ctid(&self, control: &str) -> Vec<String> {
        self.ctid["controls"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["platform"] == "aws" && c["id"] == control)
            .flat_map(|c| c["mappings"].as_array().unwrap().iter())
            .filter(|m| m["category"] == "detect" && m["value"] != "minimal")
            .map(|m| m["technique"].as_str().unwrap().to_owned())
            .collect()
    }

    /// The cloud techniques of `found`, as coverage counts them.
    fn within_cloud(&self, found: impl IntoIterator<Item = String>) -> BTreeSet<String> {
        found.into_iter().filter(|t| self.cloud.contains(t)).collect()
    }
}

const ACCOUNT: &str = "111122223333";
const STANDARD: &str = "arn:aws:securityhub:::ruleset/cis-aws-foundations-benchmark/v/1.2.0";

/// Two regions in scope; most of it deployed in us-east-1 only.
fn estate() -> Value {
    estates(&[ACCOUNT])
}

/// The same estate in each of `accounts`.
fn estates(accounts: &[&str]) -> Value {
    let plan = json!({
        "us-east-1": {
            "guardduty": {"features": ["S3_DATA_EVENTS"]},
            "securityhub": true,
            "config": {"rules": ["CLOUD_TRAIL_ENABLED", "S3_BUCKET_PUBLIC_READ_PROHIBITED"]},
            "cis": {"root-usage": true, "cloudtrail-changes": false},
            "eventbridge": {"ConsoleLogin": true, "StopLogging": true, "DeleteTrail": false},
            "trail": {"multi_region": true},
            "inspector": true
        },
        "eu-west-3": {
            "guardduty": {"features": []},
            "inspector": true,
            "macie": false
        }
    });
    Value::Object(accounts.iter().map(|a| (a.to_string(), plan.clone())).collect())
}

fn canned() -> Value {
    canned_for(&[ACCOUNT])
}

/// The proxy's answers for what moto lacks, for `estates(accounts)`: two
/// regions enabled, a Security Hub standard with two controls and an
/// account analyzer in us-east-1.
fn canned_for(accounts: &[&str]) -> Value {
    let mut hubs = serde_json::Map::new();
    let mut analyzers = serde_json::Map::new();
    for account in accounts {
        hubs.insert(
            format!("{account}/us-east-1"),
            json!({"standards": [STANDARD], "controls": {"IAM.4": "ENABLED", "S3.1": "DISABLED"}}),
        );
        analyzers.insert(
            format!("{account}/us-east-1"),
            json!([{"name": "account", "type": "ACCOUNT", "status": "ACTIVE"}]),
        );
    }
    json!({"regions": {"default": ["us-east-1", "eu-west-3"]}, "securityhub": hubs, "analyzers": analyzers})
}

type Item = (String, String, String, bool);

/// (service, region, kind, enabled) of an inventory's items.
fn items(inventory: &Value) -> BTreeSet<Item> {
    inventory["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["service"].as_str().unwrap().to_owned(),
                i["region"].as_str().unwrap().to_owned(),
                i["kind"].as_str().unwrap().to_owned(),
                i["enabled"].as_bool().unwrap(),
            )
        })
        .collect()
}

/// What a scan of `estate()`'s account finds.
fn estate_items() -> BTreeSet<Item> {
    let item = |service: &str, region: &str, kind: &str, enabled: bool| {
        (service.to_owned(), region.to_owned(), kind.to_owned(), enabled)
    };
    [
        item("guardduty", "us-east-1", "detector", true),
        item("guardduty", "us-east-1", "feature:S3_DATA_EVENTS", true),
        item("guardduty", "eu-west-3", "detector", true),
        // A detector created without features reports them off.
        item("guardduty", "eu-west-3", "feature:S3_DATA_EVENTS", false),
        item("guardduty", "eu-west-3", "feature:EKS_AUDIT_LOGS", false),
        item("securityhub", "us-east-1", "hub", true),
        item("securityhub", "us-east-1", "standard", true),
        item("securityhub", "us-east-1", "control:IAM.4", true),
        item("securityhub", "us-east-1", "control:S3.1", false),
        item("config", "us-east-1", "recorder", true),
        item("config", "us-east-1", "rule:CLOUD_TRAIL_ENABLED", true),
        item("config", "us-east-1", "rule:S3_BUCKET_PUBLIC_READ_PROHIBITED", true),
        item("cloudwatch", "us-east-1", "cis:root-usage", true),
        item("cloudwatch", "us-east-1", "cis:cloudtrail-changes", false),
        item("eventbridge", "us-east-1", "event:ConsoleLogin", true),
        item("eventbridge", "us-east-1", "event:StopLogging", true),
        item("eventbridge", "us-east-1", "event:DeleteTrail", false),
        item("cloudtrail", "us-east-1", "trail", true),
        item("accessanalyzer", "us-east-1", "analyzer", true),
        item("inspector", "us-east-1", "scanning", true),
        item("inspector", "eu-west-3", "scanning", true),
        // moto has Macie on everywhere until disabled.
        item("macie", "us-east-1", "macie", true),
    ]
    .into_iter()
    .collect()
}

/// A scan reads every service in every region in scope and records what is
/// deployed; coverage follows the region rule (only what is on in both
/// regions covers the account, or what covers the account from one
/// region) and equals the independent computation from the shipped data;
/// the gaps name what is off where; a re-scan appends nothing; a change is
/// recorded and moves coverage.
#[tokio::test]
async fn a_scan_records_what_is_deployed_and_coverage_follows_the_region_rule() {
    let aws = aws().await;
    seed(&aws.moto, &estate()).await;
    // Stand-in (what moto lacks): the account's regions, Security Hub's
    // standards and controls, Access Analyzer's analyzers.
    aws.proxy.faults(canned()).await;
    let (app, tenant) = scanning_app(&aws, |_| {}).await;
    connect(&app, &tenant, ACCOUNT).await;
    let run = scan(&app, &tenant, ACCOUNT).await;
    let account = &run["accounts"][0];
    assert_eq!(account["status"], "done", "{run}");
    assert_eq!(account["errors"], json!([]), "{run}");
    assert_eq!(account["regions"], json!(["eu-west-3", "us-east-1"]));
    assert_eq!(account["changed"], true);

    let base = format!("/v1/tenants/{}/cloud-accounts/{ACCOUNT}", tenant.id);
    let inventory = expect_status(app.get(&format!("{base}/inventory"), &tenant.key).await, StatusCode::OK).await;
    let seen = items(&inventory);
    let expected = estate_items();
    assert_eq!(seen, expected, "{inventory:#}");
    let gaps: BTreeSet<&str> = inventory["gaps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["message"].as_str().unwrap())
        .collect();
    for gap in [
        "GuardDuty S3_DATA_EVENTS off in eu-west-3",
        "Security Hub off in eu-west-3",
        "AWS Config off in eu-west-3",
        "IAM Access Analyzer off in eu-west-3",
        "Macie off in eu-west-3",
    ] {
        assert!(gaps.contains(gap), "{gap} in {gaps:?}");
    }
    assert!(!gaps.iter().any(|g| g.starts_with("GuardDuty off")), "{gaps:?}");

    // Coverage: what is on in both regions, or covers the account from one.
    let data = Mappings::load();
    let covering: Vec<String> = [
        data.guardduty("FOUNDATIONAL"),
        data.ctid("amazon_inspector"),
        data.rule("cis", "patterns", "id", "root-usage"),
        data.rule("eventbridge", "events", "name", "ConsoleLogin"),
    ]
    .concat();
    let expected = data.within_cloud(covering);
    let (coverage, covered) = account_coverage(&app, &tenant).await;
    assert_eq!(covered, expected, "{coverage:#}");
    // Not covering: one region only (S3 protection, the hub's control, the
    // Config rule, the regional StopLogging rule).
    let regional_only = data.within_cloud(
        [
            data.guardduty("S3_DATA_EVENTS"),
            data.rule("securityhub", "controls", "id", "IAM.4"),
            data.rule("eventbridge", "events", "name", "StopLogging"),
        ]
        .concat(),
    );
    assert!(!regional_only.difference(&expected).any(|t| covered.contains(t)));
    // Each technique names its detections and where they come from.
    let sources = &coverage["techniques"];
    let consolelogin = sources
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["technique"] == "T1078.004")
        .expect("T1078.004 is covered");
    let scanned: Vec<&Value> = consolelogin["detections"].as_array().unwrap().iter().collect();
    assert!(scanned.iter().all(|d| d["kind"] == "scan"));
    let rule = scanned
        .iter()
        .find(|d| d["capability"] == "event:ConsoleLogin")
        .expect("the EventBridge rule");
    assert_eq!(rule["service"], "eventbridge");
    assert_eq!(rule["mapping_source"], "eventbridge-events.json");
    assert_eq!(rule["regions"], json!(["us-east-1"]));

    // A re-scan that finds nothing new appends nothing.
    let events = inventory_events(&app).await;
    let again = scan(&app, &tenant, ACCOUNT).await;
    assert_eq!(again["accounts"][0]["changed"], false);
    assert_eq!(inventory_events(&app).await, events);

    // GuardDuty turned off in eu-west-3: recorded, and coverage follows.
    let output = tokio::process::Command::new(python())
        .args(["-c", &format!(
            "import boto3\nc = boto3.client('guardduty', endpoint_url='{}', region_name='eu-west-3', \
             aws_access_key_id='t', aws_secret_access_key='t')\n\
             c.meta.events.register('before-send.*.*', lambda request, **_: request.headers.__setitem__('x-moto-account-id', '{ACCOUNT}'))\n\
             [c.update_detector(DetectorId=d, Enable=False) for d in c.list_detectors()['DetectorIds']]",
            aws.moto.url
        )])
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let changed = scan(&app, &tenant, ACCOUNT).await;
    assert_eq!(changed["accounts"][0]["changed"], true);
    assert_eq!(inventory_events(&app).await, events + 1);
    let (_, now) = account_coverage(&app, &tenant).await;
    let without_guardduty = data.within_cloud(
        [
            data.ctid("amazon_inspector"),
            data.rule("cis", "patterns", "id", "root-usage"),
            data.rule("eventbridge", "events", "name", "ConsoleLogin"),
        ]
        .concat(),
    );
    assert_eq!(now, without_guardduty);
    let inventory = expect_status(app.get(&format!("{base}/inventory"), &tenant.key).await, StatusCode::OK).await;
    assert!(
        inventory["gaps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["message"] == "GuardDuty off in eu-west-3"),
        "{inventory:#}"
    );
    let _ = (expect_problem, Method::GET);
}

async fn count_rows(app: &TestApp, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(&app.pool).await.unwrap()
}

/// A denied call is reported with the account, the service and the IAM
/// action, and what it could not read stays as the last scan found it;
/// narrowing the regions scans those only, and coverage follows.
#[tokio::test]
async fn a_denied_call_names_the_account_service_and_action_and_keeps_what_it_could_not_read() {
    let aws = aws().await;
    seed(&aws.moto, &estate()).await;
    aws.proxy.faults(canned()).await;
    let (app, tenant) = scanning_app(&aws, |_| {}).await;
    connect(&app, &tenant, ACCOUNT).await;
    scan(&app, &tenant, ACCOUNT).await;
    let base = format!("/v1/tenants/{}/cloud-accounts/{ACCOUNT}", tenant.id);

    // Stand-in (moto has no IAM denials): the proxy denies one action in one region.
    let mut rules = canned();
    rules["deny"] = json!([{"action": "guardduty:ListDetectors", "account": ACCOUNT, "region": "eu-west-3"}]);
    aws.proxy.faults(rules).await;
    let run = scan(&app, &tenant, ACCOUNT).await;
    let account = &run["accounts"][0];
    assert_eq!(account["status"], "done", "other services were read: {run}");
    let errors = account["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{run}");
    let error = &errors[0];
    assert_eq!(error["service"], "guardduty");
    assert_eq!(error["region"], "eu-west-3");
    assert_eq!(error["action"], "guardduty:ListDetectors");
    assert_eq!(error["missing_permission"], true);
    let description = error["description"].as_str().unwrap();
    assert!(
        description.contains(ACCOUNT) && description.contains("guardduty:ListDetectors"),
        "{description}"
    );
    assert_eq!(run["progress"]["errors"], 1);
    assert_eq!(
        account["changed"], false,
        "nothing read changed, nothing unread was dropped"
    );
    let inventory = expect_status(app.get(&format!("{base}/inventory"), &tenant.key).await, StatusCode::OK).await;
    assert_eq!(
        items(&inventory),
        estate_items(),
        "the unread region keeps its detector"
    );
    assert_eq!(inventory["last_scan"]["errors"][0]["action"], "guardduty:ListDetectors");
    // Not counted as off: the gap list does not claim GuardDuty is missing.
    assert!(
        !inventory["gaps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["message"] == "GuardDuty off in eu-west-3"),
        "{inventory:#}"
    );

    // Narrowed to us-east-1: only it is read, and what is on there covers.
    aws.proxy.faults(canned()).await;
    let narrowed = app
        .request(Method::PUT, &format!("{base}/scan-regions"), Some(&tenant.key))
        .json(&json!({"regions": ["us-east-1"]}))
        .send()
        .await
        .unwrap();
    let view = expect_status(narrowed, StatusCode::OK).await;
    assert_eq!(view["scan_regions"], json!(["us-east-1"]));
    let run = scan(&app, &tenant, ACCOUNT).await;
    assert_eq!(run["accounts"][0]["regions"], json!(["us-east-1"]), "{run}");
    let stats = aws.proxy.stats().await;
    assert!(
        !stats["calls"]
            .as_object()
            .unwrap()
            .keys()
            .any(|k| k.starts_with(&format!("{ACCOUNT}/eu-west-3/"))),
        "nothing read in eu-west-3: {stats}"
    );
    let data = Mappings::load();
    let (_, covered) = account_coverage(&app, &tenant).await;
    let s3 = data.within_cloud(data.guardduty("S3_DATA_EVENTS"));
    assert!(!s3.is_empty());
    assert!(s3.is_subset(&covered), "S3 protection is on in every region in scope");
}

/// Bad input is refused with problem+json and writes nothing: an unknown
/// region, an account not connected, another tenant's account, run and
/// organization.
#[tokio::test]
async fn bad_scan_input_is_refused_and_writes_nothing() {
    let aws = aws().await;
    seed(&aws.moto, &estate()).await;
    aws.proxy.faults(canned()).await;
    let (app, tenant) = scanning_app(&aws, |_| {}).await;
    connect(&app, &tenant, ACCOUNT).await;
    let run = scan(&app, &tenant, ACCOUNT).await;
    let other = app.create_tenant("other-scanner").await;
    let writes = || async {
        (
            count_rows(&app, "SELECT count(*) FROM events").await,
            count_rows(&app, "SELECT count(*) FROM scan_runs").await,
            count_rows(&app, "SELECT count(*) FROM underway.task").await,
        )
    };
    let before = writes().await;
    let base = format!("/v1/tenants/{}/cloud-accounts/{ACCOUNT}", tenant.id);
    let put = |path: String, key: String, body: Value| {
        let request = app.request(Method::PUT, &path, Some(&key)).json(&body);
        async move { request.send().await.unwrap() }
    };

    let unknown = put(
        format!("{base}/scan-regions"),
        tenant.key.clone(),
        json!({"regions": ["us-east-1", "xx-fake-1"]}),
    )
    .await;
    let problem = expect_problem(unknown, StatusCode::UNPROCESSABLE_ENTITY, "validation").await;
    assert_eq!(problem["errors"][0]["field"], "regions[1]", "{problem}");
    let empty = put(
        format!("{base}/scan-regions"),
        tenant.key.clone(),
        json!({"regions": []}),
    )
    .await;
    expect_problem(empty, StatusCode::UNPROCESSABLE_ENTITY, "validation").await;
    let unknown_field = put(
        format!("{base}/scan-regions"),
        tenant.key.clone(),
        json!({"region": ["us-east-1"]}),
    )
    .await;
    expect_problem(unknown_field, StatusCode::UNPROCESSABLE_ENTITY, "validation").await;

    let not_connected = app
        .post(
            &format!("/v1/tenants/{}/cloud-accounts/999988887777/scan", tenant.id),
            &tenant.key,
            json!({}),
        )
        .await;
    expect_problem(not_connected, StatusCode::NOT_FOUND, "not-found").await;
    let malformed = app
        .post(
            &format!("/v1/tenants/{}/cloud-accounts/12345/scan", tenant.id),
            &tenant.key,
            json!({}),
        )
        .await;
    expect_problem(malformed, StatusCode::UNPROCESSABLE_ENTITY, "validation").await;

    // The other tenant, through its own tenant path and through ours.
    let theirs = format!("/v1/tenants/{}/cloud-accounts/{ACCOUNT}", other.id);
    expect_problem(
        app.post(&format!("{theirs}/scan"), &other.key, json!({})).await,
        StatusCode::NOT_FOUND,
        "not-found",
    )
    .await;
    expect_problem(
        app.get(&format!("{theirs}/inventory"), &other.key).await,
        StatusCode::NOT_FOUND,
        "not-found",
    )
    .await;
    expect_problem(
        put(
            format!("{theirs}/scan-regions"),
            other.key.clone(),
            json!({"regions": ["us-east-1"]}),
        )
        .await,
        StatusCode::NOT_FOUND,
        "not-found",
    )
    .await;
    expect_problem(
        app.get(
            &format!("/v1/tenants/{}/scans/{}", other.id, run["run_id"].as_str().unwrap()),
            &other.key,
        )
        .await,
        StatusCode::NOT_FOUND,
        "not-found",
    )
    .await;
    for (method, path) in [
        (Method::POST, format!("{base}/scan")),
        (Method::GET, format!("{base}/inventory")),
        (Method::PUT, format!("{base}/scan-regions")),
    ] {
        let response = app
            .request(method, &path, Some(&other.key))
            .json(&json!({"regions": ["us-east-1"]}))
            .send()
            .await
            .unwrap();
        assert!(
            matches!(response.status(), StatusCode::FORBIDDEN | StatusCode::NOT_FOUND),
            "{path}: {}",
            response.status()
        );
    }
    expect_problem(
        app.post(
            &format!(
                "/v1/tenants/{}/cloud-organizations/{}/scan",
                tenant.id,
                uuid::Uuid::new_v4()
            ),
            &tenant.key,
            json!({}),
        )
        .await,
        StatusCode::NOT_FOUND,
        "not-found",
    )
    .await;
    assert_eq!(writes().await, before, "refused requests wrote nothing");
}

/// Connecting a standalone account assumes its role through STS: refused,
/// the account is recorded in error with AWS's reason and is not scanned.
#[tokio::test]
async fn a_standalone_account_whose_role_cannot_be_assumed_is_in_error_with_aws_reason() {
    let aws = aws().await;
    let role = "arn:aws:iam::444455556666:role/CoverwatchAudit";
    // Stand-in (moto's STS assumes any role): the proxy refuses this one.
    aws.proxy.faults(json!({"deny_roles": [role]})).await;
    let (app, tenant) = scanning_app(&aws, |_| {}).await;
    let view = connect(&app, &tenant, "444455556666").await;
    assert_eq!(view["status"], "error", "{view}");
    let reason = view["error"].as_str().unwrap_or_default();
    assert!(reason.contains("not authorized to perform: sts:AssumeRole"), "{view}");
    let refused = app
        .post(
            &format!("/v1/tenants/{}/cloud-accounts/444455556666/scan", tenant.id),
            &tenant.key,
            json!({}),
        )
        .await;
    expect_problem(refused, StatusCode::NOT_FOUND, "not-found").await;
    let listed = expect_status(
        app.get(
            &format!("/v1/tenants/{}/cloud-accounts?status=error", tenant.id),
            &tenant.key,
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(listed["items"][0]["account_id"], "444455556666");

    // The role allowed: connected, and the same account scans.
    aws.proxy.faults(json!({})).await;
    let view = connect(&app, &tenant, "444455556666").await;
    assert_eq!(view["status"], "connected", "{view}");
    let run = scan(&app, &tenant, "444455556666").await;
    assert_eq!(run["accounts"][0]["status"], "done");
}

/// An organization registered, discovered, its members connected, as a
/// tenant with organization features does it.
struct Organization {
    app: TestApp,
    tenant: TestTenant,
    /// `/v1/tenants/{t}/cloud-organizations/{id}`
    base: String,
    /// account id → path (`Root/ou-00`)
    members: BTreeMap<String, String>,
}

async fn organization(aws: &Aws, app: TestApp, tenant: TestTenant, org_id: &str) -> Organization {
    let base = crate::discovery::register_organization(&app, &tenant, org_id).await;
    let id = base.rsplit('/').next().unwrap().to_owned();
    let run = crate::discovery::discover(&app, &tenant, &id).await;
    assert_eq!(run["status"], "done", "{run}");
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
    assert!(
        connected["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["status"] == "connected"),
        "{connected}"
    );
    let listed = expect_status(
        app.get(&format!("{base}/members?limit=100"), &tenant.key).await,
        StatusCode::OK,
    )
    .await;
    let members = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["account_id"].as_str().unwrap().to_owned(),
                m["path"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let _ = aws;
    Organization {
        app,
        tenant,
        base,
        members,
    }
}

/// `aws_org.py big`: `accounts` accounts over the root and `ous` OUs.
async fn small_organization(moto: &Moto, accounts: usize, ous: usize) -> String {
    let output = tokio::process::Command::new(python())
        .arg(workspace_root().join("tests/tools/aws_org.py"))
        .args(["big", "--endpoint", &moto.url])
        .args(["--accounts", &accounts.to_string(), "--ous", &ous.to_string()])
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let built: Value = serde_json::from_slice(&output.stdout).unwrap();
    built["org_id"].as_str().unwrap().to_owned()
}

/// The template's actions, from the CloudFormation and the Terraform forms.
async fn template_actions(org: &Organization) -> BTreeSet<String> {
    let (app, tenant) = (&org.app, &org.tenant);
    let cloudformation = app
        .get(
            &format!("{}/role-template?format=cloudformation", org.base),
            &tenant.key,
        )
        .await;
    assert_eq!(cloudformation.status(), StatusCode::OK);
    let template: Value = cloudformation.json().await.unwrap();
    let mut found = BTreeSet::new();
    fn walk(value: &Value, found: &mut BTreeSet<String>) {
        match value {
            Value::Object(map) => {
                for (key, inner) in map {
                    if key == "Action"
                        && let Some(list) = inner.as_array()
                    {
                        found.extend(list.iter().filter_map(|a| a.as_str()).map(str::to_owned));
                    } else {
                        walk(inner, found);
                    }
                }
            }
            Value::Array(list) => list.iter().for_each(|v| walk(v, found)),
            _ => {}
        }
    }
    walk(&template, &mut found);
    let terraform = app
        .get(&format!("{}/role-template?format=terraform", org.base), &tenant.key)
        .await
        .text()
        .await
        .unwrap();
    // The permissions policy embedded in the Terraform module, as JSON.
    let policy = terraform
        .split("resource \"aws_iam_role_policy\"")
        .nth(1)
        .and_then(|rest| rest.split("<<-POLICY\n").nth(1))
        .and_then(|rest| rest.split("\n  POLICY").next())
        .expect("the module's permissions policy");
    let mut quoted = BTreeSet::new();
    walk(&serde_json::from_str(policy).unwrap(), &mut quoted);
    // The trust policy's sts:AssumeRole is Coverwatch's, not the role's.
    found.remove("sts:AssumeRole");
    assert_eq!(found, quoted, "both forms grant the same actions");
    found
}

/// The read-only role grants exactly what discovery and scans call: every
/// action the proxy saw (in the management and every member account) is in
/// the template, and every action of the template was called.
#[tokio::test]
async fn the_role_template_grants_exactly_the_actions_discovery_and_scans_call() {
    let aws = aws().await;
    let rich = crate::discovery::rich_organization(&aws.moto).await;
    let (app, tenant) = scanning_app(&aws, |_| {}).await;
    let org = organization(&aws, app, tenant, rich["org_id"].as_str().unwrap()).await;
    let members: Vec<&str> = org.members.keys().map(String::as_str).collect();
    seed(&aws.moto, &estates(&members)).await;
    aws.proxy.faults(canned_for(&members)).await;
    // Discovery again, now counted (the rules reset the counts).
    let id = org.base.rsplit('/').next().unwrap();
    crate::discovery::discover(&org.app, &org.tenant, id).await;
    let started = org
        .app
        .post(&format!("{}/scan", org.base), &org.tenant.key, json!({}))
        .await;
    let location = started.headers()["location"].to_str().unwrap().to_owned();
    expect_status(started, StatusCode::ACCEPTED).await;
    let run = finished(&org.app, &org.tenant, &location).await;
    assert_eq!(run["progress"]["accounts_done"], members.len(), "{run}");
    assert_eq!(run["progress"]["errors"], 0, "{run}");

    let stats = aws.proxy.stats().await;
    let called: BTreeSet<String> = stats["calls"]
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.splitn(3, '/').nth(2).unwrap().to_owned())
        .filter(|action| action != "sts:AssumeRole")
        .collect();
    let granted = template_actions(&org).await;
    let unneeded: Vec<_> = granted.difference(&called).collect();
    let missing: Vec<_> = called.difference(&granted).collect();
    assert!(missing.is_empty(), "called but not granted: {missing:?}");
    assert!(unneeded.is_empty(), "granted but never called: {unneeded:?}");
}

/// A `coverwatch serve --workers-only` process of its own, scanning through
/// the proxy.
fn worker(app: &TestApp, aws: &Aws, name: &str) -> tokio::process::Child {
    tokio::process::Command::new(crate::crash::coverwatch_binary())
        .args(["serve", "--workers-only"])
        .env(
            "DATABASE_URL",
            format!(
                "{}?application_name={name}",
                crate::helpers::serving_url(&app.database_url)
            ),
        )
        .env("COVERWATCH_DATABASE_OWNER_URL", &app.database_url)
        .env("COVERWATCH_AUDIT_SIGNING_KEY", crate::helpers::SIGNING_KEY)
        .env("COVERWATCH_AWS_ENDPOINT_URL", &aws.proxy.url)
        .env("COVERWATCH_AWS_ACCESS_KEY_ID", "testing")
        .env("COVERWATCH_AWS_SECRET_ACCESS_KEY", "testing")
        .env("COVERWATCH_AWS_REQUESTS_PER_SECOND", "0")
        .env("COVERWATCH_JOB_CONCURRENCY", "2")
        .env("COVERWATCH_JOB_HEARTBEAT_SECS", "1")
        .env("COVERWATCH_JOB_POLL_MS", "200")
        .env("COVERWATCH_SCHEDULED_SCANS", "false")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

fn total_calls(stats: &Value) -> u64 {
    stats["calls"]
        .as_object()
        .unwrap()
        .values()
        .map(|n| n.as_u64().unwrap())
        .sum()
}

/// A worker SIGKILLed in the middle of a scan: the run is not left
/// running; another worker takes its jobs over and the inventory ends as
/// an uninterrupted scan leaves it (a re-scan finds nothing to change).
#[tokio::test]
async fn a_worker_killed_mid_scan_is_taken_over_and_ends_with_the_same_inventory() {
    let aws = aws().await;
    let accounts = ["111122223333", "111122224444", "111122225555", "111122226666"];
    seed(&aws.moto, &estates(&accounts)).await;
    let mut rules = canned_for(&accounts);
    // Slow answers: a window to kill the worker in.
    rules["delay_ms"] = json!(60);
    aws.proxy.faults(rules).await;
    // The API process runs no jobs: the workers below do.
    let (app, tenant) = scanning_app(&aws, |s| s.jobs.enabled = false).await;
    for account in accounts {
        connect(&app, &tenant, account).await;
    }
    let mut doomed = worker(&app, &aws, "doomed-worker");
    let mut runs = vec![];
    for account in accounts {
        let started = app
            .post(
                &format!("/v1/tenants/{}/cloud-accounts/{account}/scan", tenant.id),
                &tenant.key,
                json!({}),
            )
            .await;
        runs.push(started.headers()["location"].to_str().unwrap().to_owned());
        expect_status(started, StatusCode::ACCEPTED).await;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while total_calls(&aws.proxy.stats().await) < 20 {
        assert!(Instant::now() < deadline, "the worker never started scanning");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    doomed.start_kill().unwrap();
    doomed.wait().await.unwrap();
    let running = count_rows(&app, "SELECT count(*) FROM scan_run_accounts WHERE status = 'running'").await;
    assert!(running > 0, "killed in the middle of a scan");

    let _survivor = worker(&app, &aws, "survivor");
    let mut attempts = vec![];
    for location in &runs {
        let run = finished(&app, &tenant, location).await;
        let account = &run["accounts"][0];
        assert_eq!(account["status"], "done", "{run}");
        assert_eq!(account["errors"], json!([]), "{run}");
        attempts.push(account["attempts"].as_i64().unwrap());
    }
    assert!(
        attempts.iter().any(|a| *a >= 2),
        "a killed job was run again: {attempts:?}"
    );
    assert_eq!(
        count_rows(
            &app,
            "SELECT count(*) FROM scan_run_accounts WHERE status IN ('queued', 'running')"
        )
        .await,
        0
    );
    for account in accounts {
        let inventory = expect_status(
            app.get(
                &format!("/v1/tenants/{}/cloud-accounts/{account}/inventory", tenant.id),
                &tenant.key,
            )
            .await,
            StatusCode::OK,
        )
        .await;
        assert_eq!(items(&inventory), estate_items(), "{account}");
    }
    // One inventory change per account, never two: a retried scan appended
    // only what its first attempt had not.
    assert_eq!(inventory_events(&app).await, accounts.len() as i64);
    let events = inventory_events(&app).await;
    for account in accounts {
        let again = scan(&app, &tenant, account).await;
        assert_eq!(again["accounts"][0]["changed"], false, "{again}");
    }
    assert_eq!(inventory_events(&app).await, events);
}

/// Two worker processes scan one organization's subtree, then all of it:
/// every account once (one job each, one STS identity check each), and
/// both workers take part.
#[tokio::test]
async fn two_workers_share_an_organization_scan_and_scan_no_account_twice() {
    let aws = aws().await;
    let org_id = small_organization(&aws.moto, 8, 2).await;
    let (app, tenant) = scanning_app(&aws, |s| s.jobs.enabled = false).await;
    // Discovery runs as a job too: one worker for it.
    let discovering = worker(&app, &aws, "discoverer");
    let org = organization(&aws, app, tenant, &org_id).await;
    drop(discovering);
    let members: Vec<&str> = org.members.keys().map(String::as_str).collect();
    assert_eq!(members.len(), 9, "eight accounts and the management account");
    seed(&aws.moto, &estates(&members)).await;
    let mut rules = canned_for(&members);
    rules["delay_ms"] = json!(20);
    aws.proxy.faults(rules).await;
    let _workers = [worker(&org.app, &aws, "worker-a"), worker(&org.app, &aws, "worker-b")];
    // Both started (connected under their names) before any work is queued.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let up: i64 = sqlx::query_scalar(
            "SELECT count(DISTINCT application_name) FROM pg_stat_activity WHERE application_name LIKE 'worker-_'",
        )
        .fetch_one(&org.app.pool)
        .await
        .unwrap();
        if up == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "the workers did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The subtree first.
    let subtree: BTreeSet<&str> = org
        .members
        .iter()
        .filter(|(_, path)| path.starts_with("Root/ou-00"))
        .map(|(id, _)| id.as_str())
        .collect();
    assert!(!subtree.is_empty() && subtree.len() < members.len());
    let started = org
        .app
        .post(
            &format!("{}/scan", org.base),
            &org.tenant.key,
            json!({"path_prefix": "Root/ou-00"}),
        )
        .await;
    let location = started.headers()["location"].to_str().unwrap().to_owned();
    expect_status(started, StatusCode::ACCEPTED).await;
    let run = finished(&org.app, &org.tenant, &location).await;
    let scanned: BTreeSet<&str> = run["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["account_id"].as_str().unwrap())
        .collect();
    assert_eq!(scanned, subtree, "{run}");
    assert_eq!(run["path_prefix"], "Root/ou-00");

    // Then the whole organization; a second start while it runs is refused.
    aws.proxy
        .faults({
            let mut rules = canned_for(&members);
            // Slow enough that one worker alone could not take every job.
            rules["delay_ms"] = json!(100);
            rules
        })
        .await;
    let started = org
        .app
        .post(&format!("{}/scan", org.base), &org.tenant.key, json!({}))
        .await;
    let location = started.headers()["location"].to_str().unwrap().to_owned();
    expect_status(started, StatusCode::ACCEPTED).await;
    let again = org
        .app
        .post(&format!("{}/scan", org.base), &org.tenant.key, json!({}))
        .await;
    expect_problem(again, StatusCode::CONFLICT, "conflict").await;
    let run = finished(&org.app, &org.tenant, &location).await;
    assert_eq!(run["progress"]["accounts_done"], members.len(), "{run}");
    for account in run["accounts"].as_array().unwrap() {
        assert_eq!(account["attempts"], 1, "{account}");
        assert_eq!(account["status"], "done", "{account}");
    }
    let stats = aws.proxy.stats().await;
    for member in &members {
        assert_eq!(
            stats["calls"][format!("{member}/us-east-1/sts:GetCallerIdentity")],
            1,
            "{member} was scanned once: {stats}"
        );
    }
    // Both processes took jobs.
    let workers: BTreeSet<&str> = run["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["worker"].as_str().unwrap())
        .collect();
    assert_eq!(workers.len(), 2, "{workers:?}");
    let usage = expect_status(
        org.app
            .get(&format!("/v1/tenants/{}/usage", org.tenant.id), &org.tenant.key)
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        usage["metrics"]["account_scans"]["used"],
        subtree.len() + members.len(),
        "scans are metered"
    );
}

/// Processes started at the same instant (replicas, worker processes) all
/// come up and stay up: before migrations ran one process at a time, two
/// of them racing on the job queue's grants failed with "tuple
/// concurrently updated" and one exited (found by the scanning benchmark).
#[tokio::test]
async fn worker_processes_started_at_once_all_come_up() {
    let aws = aws().await;
    let (app, _tenant) = scanning_app(&aws, |s| s.jobs.enabled = false).await;
    let mut workers: Vec<_> = (0..6).map(|i| worker(&app, &aws, &format!("starter-{i}"))).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        for (i, child) in workers.iter_mut().enumerate() {
            assert!(child.try_wait().unwrap().is_none(), "worker {i} exited while starting");
        }
        let up: i64 = sqlx::query_scalar(
            "SELECT count(DISTINCT application_name) FROM pg_stat_activity WHERE application_name LIKE 'starter-_'",
        )
        .fetch_one(&app.pool)
        .await
        .unwrap();
        if up == 6 {
            break;
        }
        assert!(Instant::now() < deadline, "the workers did not all start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Past their migrations (a second on a migrated database), still up.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (i, child) in workers.iter_mut().enumerate() {
        assert!(child.try_wait().unwrap().is_none(), "worker {i} exited after starting");
    }
}

/// Scheduled scans and re-discoveries at the tenant's interval: each
/// account's first scan waits a share of the interval fixed by its id (not
/// all at once), then every interval; an organization is re-discovered
/// on the same interval; none of it without the plan feature.
#[tokio::test]
async fn scans_and_rediscoveries_run_on_the_plan_schedule_spread_over_the_interval() {
    let aws = aws().await;
    let accounts = [
        "210987654321",
        "310987654321",
        "410987654321",
        "510987654321",
        "610987654321",
    ];
    seed(&aws.moto, &estates(&accounts)).await;
    aws.proxy.faults(canned_for(&accounts)).await;
    let org_id = small_organization(&aws.moto, 2, 1).await;
    let clock = coverwatch_domain::clock::ManualClock::at(chrono::Utc::now());
    let endpoint = aws.proxy.url.clone();
    let app = crate::helpers::spawn_app_with(Arc::new(clock.clone()), move |settings| {
        settings.aws.endpoint_url = Some(endpoint);
        settings.aws.requests_per_second = 0.0;
        settings.jobs.scheduled_scans = true;
        settings.subscribers.settle_interval_ms = 100;
    })
    .await;
    // A tenant whose tier (FREE) schedules nothing.
    let free = app.create_tenant("unscheduled").await;
    connect(&app, &free, "710987654321").await;
    let tenant = app.create_tenant("scheduled").await;
    app.set_overrides(
        &tenant,
        json!({"max_accounts": "unlimited", "org_features": true, "scan_interval_hours": 1}),
    )
    .await;
    for account in accounts {
        connect(&app, &tenant, account).await;
    }
    let org = organization(&aws, app, tenant, &org_id).await;
    let app = &org.app;
    let discoveries = || count_rows(app, "SELECT count(*) FROM discovery_runs");
    let settle = || tokio::time::sleep(Duration::from_millis(1500));
    let quiet = || async {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            settle().await;
            let running = count_rows(app, "SELECT count(*) FROM scan_runs WHERE status = 'running'").await;
            if running == 0 || Instant::now() > deadline {
                break;
            }
        }
    };

    // Two hours in steps of ten minutes.
    let start = coverwatch_domain::clock::Clock::now(&clock);
    for _ in 1..=12 {
        clock.advance(chrono::Duration::minutes(10));
        quiet().await;
    }
    let mut first_steps = BTreeSet::new();
    for account in accounts {
        let started: Vec<chrono::DateTime<chrono::Utc>> = sqlx::query_scalar(
            "SELECT r.started_at FROM scan_run_accounts a JOIN scan_runs r USING (run_id)
              WHERE r.trigger = 'scheduled' AND a.account_id = $1 AND a.status = 'done' ORDER BY r.started_at",
        )
        .bind(account)
        .fetch_all(&app.pool)
        .await
        .unwrap();
        assert!(started.len() >= 2, "{account}: {started:?}");
        // At its own point of every hour: exactly an interval apart.
        for pair in started.windows(2) {
            assert_eq!(pair[1] - pair[0], chrono::Duration::hours(1), "{account}: {started:?}");
        }
        assert!(
            started[0] - start <= chrono::Duration::minutes(70),
            "{account}: {started:?}"
        );
        first_steps.insert((started[0] - start).num_minutes() / 10);
    }
    assert!(
        first_steps.len() > 1,
        "spread over the interval, not all at once: {first_steps:?}"
    );
    assert!(discoveries().await >= 2, "re-discovered on schedule");
    assert_eq!(
        count_rows(
            app,
            &format!("SELECT count(*) FROM scan_runs WHERE tenant_id = '{}'", free.id)
        )
        .await,
        0,
        "the FREE tier schedules nothing"
    );
    let latest: String = sqlx::query_scalar("SELECT status FROM discovery_runs ORDER BY started_at DESC LIMIT 1")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_ne!(latest, "failed");
}
