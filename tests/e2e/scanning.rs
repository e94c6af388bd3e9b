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
    json!({ACCOUNT: {
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
    }})
}

fn canned() -> Value {
    json!({
        "regions": {ACCOUNT: ["us-east-1", "eu-west-3"]},
        "securityhub": {format!("{ACCOUNT}/us-east-1"): {
            "standards": [STANDARD], "controls": {"IAM.4": "ENABLED", "S3.1": "DISABLED"}}},
        "analyzers": {format!("{ACCOUNT}/us-east-1"): [{"name": "account", "type": "ACCOUNT", "status": "ACTIVE"}]}
    })
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
    let seen: BTreeSet<(String, String, String, bool)> = inventory["items"]
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
        .collect();
    let item = |service: &str, region: &str, kind: &str, enabled: bool| {
        (service.to_owned(), region.to_owned(), kind.to_owned(), enabled)
    };
    let expected: BTreeSet<_> = [
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
    .collect();
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
    let coverage = expect_status(
        app.get(
            &format!("/v1/tenants/{}/coverage/accounts/{ACCOUNT}", tenant.id),
            &tenant.key,
        )
        .await,
        StatusCode::OK,
    )
    .await;
    let covered: BTreeSet<String> = coverage["account_techniques"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_owned())
        .collect();
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
    let coverage = expect_status(
        app.get(
            &format!("/v1/tenants/{}/coverage/accounts/{ACCOUNT}", tenant.id),
            &tenant.key,
        )
        .await,
        StatusCode::OK,
    )
    .await;
    let now: BTreeSet<String> = coverage["account_techniques"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_owned())
        .collect();
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
