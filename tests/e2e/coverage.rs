//! Detections and ATT&CK coverage end to end: an organization discovered
//! from moto (its GuardDuty administrator, Config aggregator and trail become
//! derived detections), account and organization detections, account and
//! organization coverage with the breakdown, subtrees and platforms,
//! snapshots, Navigator layers, retention with a controlled clock, bad input,
//! isolation, and the projection rebuilt from position 0 equal to the
//! incremental one. Expected sets are computed here from the shipped CTID
//! mappings and catalog, independently of the projection.

use crate::discovery::{FaultProxy, Moto, discover, registered_on, rich_organization};
use crate::helpers::{TestApp, TestTenant, expect_status, spawn_app_with};
use coverwatch_domain::attack::{self, PlatformSet, TechniqueId, ctid_mappings};
use coverwatch_domain::clock::{Clock, ManualClock, SystemClock};
use coverwatch_projections::read_models;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

type Set = BTreeSet<String>;

fn cloud() -> Set {
    attack::latest()
        .denominator(&PlatformSet::cloud())
        .into_iter()
        .map(|t| t.to_string())
        .collect()
}

/// A CTID control's detect techniques at ≥ 0.6, within the cloud platforms.
fn ctid(control: &str) -> Set {
    let cloud = cloud();
    ctid_mappings()
        .detect("aws", control, attack::latest())
        .into_iter()
        .filter(|m| m.confidence.value() >= 0.6)
        .map(|m| m.technique.to_string())
        .filter(|t| cloud.contains(t))
        .collect()
}

fn strings(value: &Value) -> Set {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

fn set(items: &[&str]) -> Set {
    items.iter().map(|s| s.to_string()).collect()
}

/// GET `path` as the tenant, expecting 200.
async fn ok(app: &TestApp, tenant: &TestTenant, path: &str) -> Value {
    expect_status(app.get(path, &tenant.key).await, StatusCode::OK).await
}

/// Connects a standalone account of the tenant.
async fn standalone_account(app: &TestApp, tenant: &TestTenant, account_id: &str) {
    expect_status(
        app.post(
            &format!("/v1/tenants/{}/cloud-accounts", tenant.id),
            &tenant.key,
            json!({"account_id": account_id, "region": "us-east-1", "environment": "production",
                   "role_arn": format!("arn:aws:iam::{account_id}:role/CoverwatchAudit")}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
}

async fn wait_for<F: Fn(&Value) -> bool>(app: &TestApp, tenant: &TestTenant, path: &str, done: F) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let body = ok(app, tenant, path).await;
        if done(&body) {
            return body;
        }
        assert!(Instant::now() < deadline, "{path} never got there: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn connect(app: &TestApp, tenant: &TestTenant, base: &str, body: Value) {
    let result = expect_status(
        app.post(&format!("{base}/members/connect"), &tenant.key, body).await,
        StatusCode::OK,
    )
    .await;
    assert!(
        result["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["status"] == "connected"),
        "{result}"
    );
}

#[tokio::test]
async fn coverage_of_accounts_and_organizations_with_inheritance_snapshots_and_layers() {
    let moto = Moto::start().await;
    let built = rich_organization(&moto).await;
    let (app, tenant, base) = registered_on(&moto.url, built["org_id"].as_str().unwrap(), Arc::new(SystemClock)).await;
    app.set_overrides(&tenant, json!({"org_features": true, "max_accounts": 10}))
        .await;
    let org = base.rsplit('/').next().unwrap().to_owned();
    assert_eq!(discover(&app, &tenant, &org).await["status"], "done");
    let accounts = &built["accounts"];
    let id = |name: &str| accounts[name].as_str().unwrap().to_owned();
    let t = format!("/v1/tenants/{}", tenant.id);

    // Discovery's sources became organization-scoped detections with CTID
    // techniques: GuardDuty, the Config aggregator, and the trail (CTID maps
    // no technique to CloudTrail).
    let derived = wait_for(&app, &tenant, &format!("{t}/detections"), |b| {
        b["items"].as_array().unwrap().len() == 3
    })
    .await;
    let by_source = |source: &str| {
        derived["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["source"] == source)
            .unwrap_or_else(|| panic!("no {source} detection: {derived}"))
            .clone()
    };
    let guardduty = by_source("guardduty");
    assert_eq!(
        guardduty["scope"],
        json!({"type": "organization", "organization_id": org, "accounts": "all"})
    );
    assert_eq!(guardduty["derived_source_id"], format!("guardduty:{}", id("security")));
    assert_eq!(guardduty["mapping_version"], "ctid-aws-12/12/2024 (ATT&CK 16.1)");
    assert_eq!(guardduty["attack_version"], "18.1");
    let expected_techniques: Vec<(String, f64)> = ctid_mappings()
        .detect("aws", "amazon_guardduty", attack::latest())
        .into_iter()
        .map(|m| (m.technique.to_string(), m.confidence.value()))
        .collect();
    let listed: Vec<(String, f64)> = guardduty["techniques"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["id"].as_str().unwrap().to_owned(), t["confidence"].as_f64().unwrap()))
        .collect();
    assert_eq!(listed, expected_techniques);
    assert_eq!(by_source("config_rule")["derived_source_id"], built["aggregator_arn"]);
    assert_eq!(by_source("log_sink")["techniques"], json!([]));

    connect(&app, &tenant, &base, json!({"path_prefix": "Root/Production"})).await;
    connect(&app, &tenant, &base, json!({"account_ids": [id("security")]})).await;

    // web-1's own detection: 0.9 and exactly 0.6 count, 0.59 does not.
    let own = expect_status(
        app.post(
            &format!("{t}/detections"),
            &tenant.key,
            json!({"name": "Root and cloud storage", "source": "cloudtrail_metric_filter",
                   "techniques": [{"id": "T1078.004", "confidence": 0.9}, {"id": "T1530", "confidence": 0.6},
                                  {"id": "T1098", "confidence": 0.59}],
                   "scope": {"type": "account", "account_id": id("web-1")}}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(own["status"], "enabled");
    // An organization detection for a subset: api-1 only.
    expect_status(
        app.post(
            &format!("{t}/detections"),
            &tenant.key,
            json!({"name": "Exfiltration to other accounts", "source": "eventbridge_rule",
                   "techniques": [{"id": "T1537", "confidence": 0.8}],
                   "scope": {"type": "organization", "organization_id": org, "accounts": [id("api-1")]}}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;

    let org_set: Set = ctid("amazon_guardduty").union(&ctid("aws_config")).cloned().collect();
    let web_own = set(&["T1078.004", "T1530"]);
    let web = ok(&app, &tenant, &format!("{t}/coverage/accounts/{}", id("web-1"))).await;
    assert_eq!(strings(&web["account_techniques"]), &web_own - &org_set);
    assert_eq!(strings(&web["org_techniques"]), &org_set - &web_own);
    assert_eq!(strings(&web["overlap_techniques"]), &web_own & &org_set);
    let web_covered: Set = &web_own | &org_set;
    assert_eq!(web["covered"], web_covered.len());
    assert_eq!(web["denominator"], 151);
    assert!((web["total_coverage"].as_f64().unwrap() - web_covered.len() as f64 / 151.0).abs() < 1e-12);
    assert_eq!(web["attack_version"], "18.1");
    assert!(web["as_of_position"].as_i64().unwrap() > 0);
    let api1 = ok(&app, &tenant, &format!("{t}/coverage/accounts/{}", id("api-1"))).await;
    let with_exfiltration: Set = &org_set | &set(&["T1537"]);
    assert_eq!(strings(&api1["org_techniques"]), with_exfiltration);
    assert_eq!(strings(&api1["account_techniques"]), Set::new());

    // The organization: four connected accounts.
    let coverage = ok(&app, &tenant, &format!("{t}/coverage/organizations/{org}")).await;
    let union: Set = &(&org_set | &web_own) | &set(&["T1537"]);
    assert_eq!(strings(&coverage["union"]["techniques"]), union);
    assert_eq!(strings(&coverage["minimum"]["techniques"]), org_set);
    assert_eq!(coverage["union"]["covered"], union.len());
    assert_eq!(coverage["accounts"].as_array().unwrap().len(), 4);
    assert_eq!(coverage["org_detection_count"], 4);
    assert_eq!(strings(&coverage["org_covered_techniques"]), with_exfiltration);
    let tactics = coverage["by_tactic"].as_array().unwrap();
    assert_eq!(tactics.len(), 14);
    for tactic in tactics {
        let (d, u, m) = (
            tactic["denominator"].as_u64().unwrap(),
            tactic["union"].as_u64().unwrap(),
            tactic["minimum"].as_u64().unwrap(),
        );
        assert!(m <= u && u <= d, "{tactic}");
    }
    let credential_access = tactics.iter().find(|t| t["tactic"] == "initial-access").unwrap();
    assert!(
        credential_access["union"].as_u64().unwrap() >= 1,
        "T1078.004 is initial access"
    );

    // A subtree: Api holds api-1 and api-2.
    let api = ok(
        &app,
        &tenant,
        &format!("{t}/coverage/organizations/{org}?path_prefix=Root/Production/Web/Api"),
    )
    .await;
    let in_api: Set = api["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["account_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(in_api, set(&[&id("api-1"), &id("api-2")]));
    assert_eq!(strings(&api["union"]["techniques"]), with_exfiltration);
    assert_eq!(strings(&api["minimum"]["techniques"]), org_set);
    // A subtree without a connected account: nothing covered, but the
    // organization's detections and the position are still reported.
    let nowhere = ok(
        &app,
        &tenant,
        &format!("{t}/coverage/organizations/{org}?path_prefix=Root/Nowhere"),
    )
    .await;
    assert_eq!(nowhere["accounts"], json!([]));
    assert_eq!(nowhere["union"]["covered"], 0);
    assert_eq!(nowhere["org_detection_count"], coverage["org_detection_count"]);
    assert!(nowhere["as_of_position"].as_i64().unwrap() >= coverage["as_of_position"].as_i64().unwrap());
    // Another platform set: IaaS only.
    let iaas = ok(
        &app,
        &tenant,
        &format!("{t}/coverage/organizations/{org}?platforms=IaaS"),
    )
    .await;
    assert_eq!(iaas["denominator"], 104);
    assert_eq!(
        app.get(
            &format!("{t}/coverage/organizations/{org}?platforms=Mainframe"),
            &tenant.key
        )
        .await
        .status(),
        StatusCode::UNPROCESSABLE_ENTITY
    );

    // Snapshots: the newest organization snapshot has today's figures;
    // disabling GuardDuty's detection moves them and adds one.
    let snapshots_path = format!("{t}/coverage/organizations/{org}/snapshots");
    let before = ok(&app, &tenant, &snapshots_path).await;
    let changes = |s: &Value| {
        s["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|x| x["kind"] == "change")
            .cloned()
            .collect::<Vec<_>>()
    };
    let last = changes(&before).last().cloned().unwrap();
    assert_eq!(last["figures"]["union"]["covered"], union.len());
    assert_eq!(last["figures"]["minimum"]["covered"], org_set.len());
    assert_eq!(last["figures"]["accounts"], 4);
    assert_eq!(last["attack_version"], "18.1");
    let guardduty_id = guardduty["detection_id"].as_str().unwrap();
    let disabled = expect_status(
        app.post(
            &format!("{t}/detections/{guardduty_id}/disable"),
            &tenant.key,
            json!({}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(disabled["status"], "disabled");
    let after = ok(&app, &tenant, &snapshots_path).await;
    assert_eq!(changes(&after).len(), changes(&before).len() + 1);
    let config = ctid("aws_config");
    let newest = changes(&after).last().cloned().unwrap();
    assert_eq!(newest["figures"]["minimum"]["covered"], config.len());
    assert!(newest["position"].as_i64().unwrap() > last["position"].as_i64().unwrap());
    let none = ok(
        &app,
        &tenant,
        &format!("{snapshots_path}?from=2020-01-01T00:00:00Z&to=2020-12-31T00:00:00Z"),
    )
    .await;
    assert_eq!(none, json!({"items": [], "next_cursor": null}));
    // Page by page (two at a time), the same history in the same order.
    let mut paged = vec![];
    let mut next = format!("{snapshots_path}?limit=2");
    loop {
        let page = ok(&app, &tenant, &next).await;
        assert!(page["items"].as_array().unwrap().len() <= 2);
        paged.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(cursor) => next = format!("{snapshots_path}?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(Value::from(paged), after["items"]);
    assert!(after["items"].as_array().unwrap().len() > 2, "more than one page");
    for bad in ["limit=0", "limit=501", "cursor=nonsense", "cursor=1.2.weekly"] {
        let response = app.get(&format!("{snapshots_path}?{bad}"), &tenant.key).await;
        expect_status(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    }
    // An account's own history: web-1 lost GuardDuty's techniques.
    let web_history = ok(
        &app,
        &tenant,
        &format!("{t}/coverage/accounts/{}/snapshots?limit=500", id("web-1")),
    )
    .await;
    let web_changes = changes(&web_history);
    let newest_web = web_changes.last().unwrap();
    assert_eq!(newest_web["position"], newest["position"], "the same event moved both");
    assert_eq!(newest_web["figures"]["covered"], (&web_own | &config).len());
    assert!(
        web_changes.iter().any(|s| s["figures"]["covered"] == web_covered.len()),
        "the figures before the change are kept"
    );
    expect_status(
        app.get(&format!("{t}/coverage/accounts/999999999999/snapshots"), &tenant.key)
            .await,
        StatusCode::NOT_FOUND,
    )
    .await;
    let coverage = ok(&app, &tenant, &format!("{t}/coverage/organizations/{org}")).await;
    assert_eq!(strings(&coverage["minimum"]["techniques"]), config);
    assert_eq!(coverage["org_detection_count"], 3);

    // Navigator layers: the 4.5 format's required fields and value ranges.
    let layer = ok(
        &app,
        &tenant,
        &format!("{t}/coverage/organizations/{org}/navigator-layer?view=union"),
    )
    .await;
    let union_now = strings(&coverage["union"]["techniques"]);
    check_layer(&layer, &union_now);
    let minimum = ok(
        &app,
        &tenant,
        &format!("{t}/coverage/organizations/{org}/navigator-layer?view=minimum"),
    )
    .await;
    check_layer(&minimum, &config);
    assert!(
        minimum["techniques"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["score"] == 100)
    );
    let account_layer = ok(
        &app,
        &tenant,
        &format!("{t}/coverage/accounts/{}/navigator-layer", id("web-1")),
    )
    .await;
    let web_now: Set = &web_own | &config;
    check_layer(&account_layer, &web_now);
    let t1530 = account_layer["techniques"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["techniqueID"] == "T1530")
        .unwrap();
    assert!(
        t1530["comment"].as_str().unwrap().contains("Root and cloud storage"),
        "{t1530}"
    );

    // Another tenant sees none of it, through its own tenant or this one.
    let other = app.create_tenant("someone-else").await;
    for path in [
        format!("{t}/coverage/organizations/{org}"),
        format!("{t}/coverage/accounts/{}", id("web-1")),
        format!("{t}/detections"),
    ] {
        assert_eq!(
            app.get(&path, &other.key).await.status(),
            StatusCode::NOT_FOUND,
            "{path}"
        );
    }
    let theirs = format!("/v1/tenants/{}", other.id);
    for path in [
        format!("{theirs}/coverage/organizations/{org}"),
        format!("{theirs}/coverage/organizations/{org}/snapshots"),
        format!("{theirs}/coverage/organizations/{org}/navigator-layer"),
        format!("{theirs}/coverage/accounts/{}", id("web-1")),
        format!("{theirs}/coverage/accounts/{}/snapshots", id("web-1")),
        format!("{theirs}/coverage/accounts/{}/navigator-layer", id("web-1")),
        format!("{theirs}/detections/{guardduty_id}"),
    ] {
        assert_eq!(
            app.get(&path, &other.key).await.status(),
            StatusCode::NOT_FOUND,
            "{path}"
        );
    }
    // Nor can it change this tenant's detection through its own tenant.
    let events = app.event_count().await;
    let detection = format!("{theirs}/detections/{guardduty_id}");
    for response in [
        app.patch(&detection, &other.key, json!({"name": "Taken over"})).await,
        app.post(&format!("{detection}/disable"), &other.key, json!({})).await,
        app.delete(&detection, &other.key).await,
    ] {
        expect_status(response, StatusCode::NOT_FOUND).await;
    }
    assert_eq!(app.event_count().await, events, "nothing written");

    // GuardDuty's administrator is deregistered: re-discovery retires its
    // detection; registered again, the source gets a new detection.
    let guardduty_admin = |action: &str| {
        format!(
            "import boto3; boto3.client('organizations', endpoint_url='{}', region_name='us-east-1', \
             aws_access_key_id='testing', aws_secret_access_key='testing').{action}_delegated_administrator(\
             AccountId='{}', ServicePrincipal='guardduty.amazonaws.com')",
            moto.url,
            id("security")
        )
    };
    for (action, expected) in [
        ("deregister", vec!["retired"]),
        ("register", vec!["enabled", "retired"]),
    ] {
        let status = tokio::process::Command::new(crate::helpers::python())
            .args(["-c", &guardduty_admin(action)])
            .status()
            .await
            .unwrap();
        assert!(status.success());
        assert_eq!(discover(&app, &tenant, &org).await["status"], "done");
        let path = format!("{t}/detections?source=guardduty");
        let listed = wait_for(&app, &tenant, &path, |b| {
            let mut statuses: Vec<&str> = b["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["status"].as_str().unwrap())
                .collect();
            statuses.sort();
            statuses == expected
        })
        .await;
        assert!(
            listed["items"]
                .as_array()
                .unwrap()
                .iter()
                .all(|d| d["derived_source_id"] == format!("guardduty:{}", id("security")))
        );
    }

    // The projection rebuilt from position 0 equals the incremental one,
    // snapshots included.
    app.caught_up(Some("coverage"), Duration::from_secs(20)).await;
    let differences = coverwatch_replay::rebuild::compare(&app.pool, read_models(), 100)
        .await
        .unwrap();
    assert!(differences.is_empty(), "{differences:?}");
}

fn check_layer(layer: &Value, expected: &Set) {
    assert_eq!(layer["versions"]["layer"], "4.5");
    assert_eq!(layer["versions"]["attack"], "18");
    assert!(layer["versions"]["navigator"].is_string());
    assert_eq!(layer["domain"], "enterprise-attack");
    assert!(layer["name"].as_str().is_some_and(|n| !n.is_empty()));
    let gradient = &layer["gradient"];
    assert!(gradient["colors"].as_array().unwrap().len() >= 2);
    assert!(gradient["minValue"].as_f64().unwrap() < gradient["maxValue"].as_f64().unwrap());
    assert!(!layer["legendItems"].as_array().unwrap().is_empty());
    let techniques = layer["techniques"].as_array().unwrap();
    let listed: Set = techniques
        .iter()
        .map(|t| t["techniqueID"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(&listed, expected);
    assert_eq!(listed.len(), techniques.len(), "one entry per technique");
    for technique in techniques {
        let id = TechniqueId::parse(technique["techniqueID"].as_str().unwrap()).unwrap();
        assert!(attack::latest().get(&id).is_some());
        let score = technique["score"].as_f64().unwrap();
        assert!((0.0..=100.0).contains(&score), "{technique}");
        assert!(technique["comment"].as_str().unwrap().contains("covered by"));
        assert_eq!(technique["enabled"], true);
    }
}

#[tokio::test]
async fn snapshots_are_taken_daily_and_pruned_to_the_tiers_retention() {
    let moto = Moto::start().await;
    let built = rich_organization(&moto).await;
    let clock = ManualClock::at(chrono::Utc::now());
    let (app, tenant, base) =
        registered_on(&moto.url, built["org_id"].as_str().unwrap(), Arc::new(clock.clone())).await;
    // Organization features and accounts, the FREE tier's 30-day retention.
    app.set_overrides(&tenant, json!({"org_features": true, "max_accounts": 10}))
        .await;
    let org = base.rsplit('/').next().unwrap().to_owned();
    assert_eq!(discover(&app, &tenant, &org).await["status"], "done");
    connect(
        &app,
        &tenant,
        &base,
        json!({"account_ids": [built["accounts"]["web-1"]]}),
    )
    .await;
    let t = format!("/v1/tenants/{}", tenant.id);
    let snapshots_path = format!("{t}/coverage/organizations/{org}/snapshots");
    let kinds = |s: &Value, kind: &str| {
        s["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|x| x["kind"] == kind)
            .count()
    };
    // The change snapshots of today, and the first daily one.
    let today = wait_for(&app, &tenant, &snapshots_path, |s| kinds(s, "daily") == 1).await;
    assert!(kinds(&today, "change") >= 1);

    clock.advance(chrono::Duration::days(10));
    wait_for(&app, &tenant, &snapshots_path, |s| kinds(s, "daily") == 2).await;
    clock.advance(chrono::Duration::days(21));
    // 31 days on: today's change snapshots and the first daily one are
    // older than 30 days and pruned; the day-10 one and today's new daily stay.
    let later = wait_for(
        &app,
        &tenant,
        &format!("{snapshots_path}?from=2000-01-01T00:00:00Z"),
        |s| kinds(s, "change") == 0 && kinds(s, "daily") == 2,
    )
    .await;
    let times: Vec<chrono::DateTime<chrono::Utc>> = later["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["taken_at"].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(
        times.iter().all(|t| *t >= clock.now() - chrono::Duration::days(30)),
        "{later}"
    );
    let (left,): (i64,) = sqlx::query_as("SELECT count(*) FROM coverage_snapshots WHERE tenant_id = $1::uuid")
        .bind(tenant.id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(left, 0, "account change snapshots are pruned too");
    // The log keeps everything.
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'DetectionRegistered'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(events, 3);
}

#[tokio::test]
async fn bad_detections_are_refused_field_by_field_and_write_nothing() {
    let app = spawn_app_with(Arc::new(SystemClock), |_| {}).await;
    let tenant = app.create_tenant("detections-input").await;
    let t = format!("/v1/tenants/{}", tenant.id);
    standalone_account(&app, &tenant, "111122223333").await;
    let events_before = app.event_count().await;
    let account = json!({"type": "account", "account_id": "111122223333"});
    let cases = [
        (
            json!({"name": "x", "source": "guardduty", "techniques": [{"id": "T12", "confidence": 0.7}], "scope": account}),
            "techniques[0].id",
        ),
        (
            json!({"name": "x", "source": "guardduty", "techniques": [{"id": "T1078", "confidence": 1.5}], "scope": account}),
            "techniques[0].confidence",
        ),
        (
            json!({"name": "x", "source": "guardduty", "techniques": [{"id": "T9999", "confidence": 0.7}], "scope": account}),
            "techniques[0].id",
        ),
        (
            json!({"name": "x", "source": "guardduty", "techniques": [], "scope": account}),
            "techniques",
        ),
        (
            json!({"name": "x", "source": "sigma", "techniques": [{"id": "T1078", "confidence": 0.7}], "scope": account}),
            "source",
        ),
        (
            json!({"name": "x", "source": "guardduty", "techniques": [{"id": "T1078", "confidence": 0.7}],
                "scope": {"type": "account", "account_id": "111122223333", "accounts": ["111122223333"]}}),
            "scope",
        ),
        (
            json!({"name": "x", "source": "guardduty", "techniques": [{"id": "T1078", "confidence": 0.7}],
                "scope": {"type": "account", "account_id": "999988887777"}}),
            "scope.account_id",
        ),
        (
            json!({"name": "x", "source": "guardduty", "techniques": [{"id": "T1078", "confidence": 0.7}],
                "scope": {"type": "organization", "organization_id": uuid::Uuid::now_v7()}}),
            "scope.organization_id",
        ),
    ];
    for (body, field) in cases {
        let problem = expect_status(
            app.post(&format!("{t}/detections"), &tenant.key, body.clone()).await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        let fields: Vec<&str> = problem["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["field"].as_str().unwrap())
            .collect();
        assert!(fields.contains(&field), "{body} → {problem}");
    }
    assert_eq!(app.event_count().await, events_before, "nothing was written");

    // A valid one; then changes are checked the same way, and a retired
    // detection takes no more changes.
    let created = expect_status(
        app.post(
            &format!("{t}/detections"),
            &tenant.key,
            json!({"name": "Console login without MFA", "source": "custom",
                   "techniques": [{"id": "T1078.004", "confidence": 0.7}], "scope": account}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let path = format!("{t}/detections/{}", created["detection_id"].as_str().unwrap());
    let summary: String = sqlx::query_scalar("SELECT summary FROM audit_log WHERE action = 'DetectionRegistered'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(
        summary,
        "detection Console login without MFA registered (custom, 1 techniques, account scope)"
    );
    let changed = expect_status(
        app.patch(
            &path,
            &tenant.key,
            json!({"techniques": [{"id": "T1078.004", "confidence": 0.5}]}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(changed["techniques"], json!([{"id": "T1078.004", "confidence": 0.5}]));
    let coverage = ok(&app, &tenant, &format!("{t}/coverage/accounts/111122223333")).await;
    assert_eq!(coverage["covered"], 0, "0.5 is below the threshold");
    let usage = ok(&app, &tenant, &format!("{t}/usage")).await;
    assert_eq!(usage["metrics"]["detections"]["used"], 1);
    expect_status(
        app.patch(
            &path,
            &tenant.key,
            json!({"techniques": [{"id": "T1078.004", "confidence": -1}]}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    expect_status(app.delete(&path, &tenant.key).await, StatusCode::OK).await;
    expect_status(
        app.post(&format!("{path}/enable"), &tenant.key, json!({})).await,
        StatusCode::GONE,
    )
    .await;
    let listed = ok(&app, &tenant, &format!("{t}/detections?status=retired")).await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    // Usage meters detections in force: the retired one no longer counts.
    let usage = ok(&app, &tenant, &format!("{t}/usage")).await;
    assert_eq!(usage["metrics"]["detections"]["used"], 0);
}

#[tokio::test]
async fn concurrent_edits_of_one_detection_at_the_same_etag_have_one_winner() {
    let app = spawn_app_with(Arc::new(SystemClock), |_| {}).await;
    let tenant = app.create_tenant("detections-etag").await;
    let t = format!("/v1/tenants/{}", tenant.id);
    standalone_account(&app, &tenant, "111122223333").await;
    let created = app
        .post(
            &format!("{t}/detections"),
            &tenant.key,
            json!({"name": "Root login", "source": "custom",
                   "techniques": [{"id": "T1078.004", "confidence": 0.9}],
                   "scope": {"type": "account", "account_id": "111122223333"}}),
        )
        .await;
    assert_eq!(created.headers()["etag"], "\"1\"");
    let created = expect_status(created, StatusCode::CREATED).await;
    assert_eq!(created["version"], 1);
    let path = format!("{t}/detections/{}", created["detection_id"].as_str().unwrap());
    let updates = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM events WHERE event_type = 'DetectionUpdated'")
            .fetch_one(&app.pool)
            .await
            .unwrap()
    };

    // Twelve analysts edit what they all read at version 1: one change lands,
    // every other is refused rather than silently overwriting it.
    let attempts = futures::future::join_all((0..12).map(|i| {
        app.request(reqwest::Method::PATCH, &path, Some(&tenant.key))
            .header("if-match", "\"1\"")
            .json(&json!({"techniques": [{"id": "T1530", "confidence": 0.6 + f64::from(i) / 100.0}]}))
            .send()
    }))
    .await;
    let mut winners = vec![];
    for (i, attempt) in attempts.into_iter().enumerate() {
        let response = attempt.unwrap();
        match response.status() {
            StatusCode::OK => winners.push((i, response.json::<Value>().await.unwrap())),
            StatusCode::PRECONDITION_FAILED | StatusCode::CONFLICT => {
                let problem: Value = response.json().await.unwrap();
                let kind = problem["type"].as_str().unwrap();
                assert!(
                    kind.ends_with("/precondition-failed") || kind.ends_with("/conflict"),
                    "{problem}"
                );
            }
            other => panic!("attempt {i}: {other}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one winner");
    let (i, winner) = &winners[0];
    assert_eq!(winner["version"], 2);
    assert_eq!(updates().await, 1, "only the winner's change was appended");
    let now = expect_status(app.get(&path, &tenant.key).await, StatusCode::OK).await;
    assert_eq!(
        now["techniques"],
        json!([{"id": "T1530", "confidence": 0.6 + *i as f64 / 100.0}])
    );

    // A stale version is refused for every change, and writes nothing.
    for (method, route, body) in [
        (reqwest::Method::PATCH, path.clone(), json!({"name": "Renamed"})),
        (reqwest::Method::POST, format!("{path}/disable"), json!({})),
        (reqwest::Method::DELETE, path.clone(), json!({})),
    ] {
        let events = app.event_count().await;
        let stale = app
            .request(method, &route, Some(&tenant.key))
            .header("if-match", "\"1\"")
            .json(&body)
            .send()
            .await
            .unwrap();
        let problem = expect_status(stale, StatusCode::PRECONDITION_FAILED).await;
        assert_eq!(problem["status"], 412);
        assert_eq!(app.event_count().await, events, "{route}: nothing written");
    }
    // The current version is accepted.
    let disabled = app
        .request(reqwest::Method::POST, &format!("{path}/disable"), Some(&tenant.key))
        .header("if-match", "\"2\"")
        .send()
        .await
        .unwrap();
    assert_eq!(disabled.headers()["etag"], "\"3\"");
    let disabled = expect_status(disabled, StatusCode::OK).await;
    assert_eq!(disabled["status"], "disabled");
}

#[tokio::test]
async fn a_member_in_error_loses_what_the_organization_sources_give_but_keeps_registered_detections() {
    let moto = Moto::start().await;
    let built = rich_organization(&moto).await;
    let proxy = FaultProxy::start(&moto.url).await;
    let (app, tenant, base) = registered_on(&proxy.url, built["org_id"].as_str().unwrap(), Arc::new(SystemClock)).await;
    app.set_overrides(&tenant, json!({"org_features": true, "max_accounts": 10}))
        .await;
    let org = base.rsplit('/').next().unwrap().to_owned();
    assert_eq!(discover(&app, &tenant, &org).await["status"], "done");
    let t = format!("/v1/tenants/{}", tenant.id);
    wait_for(&app, &tenant, &format!("{t}/detections"), |b| {
        b["items"].as_array().unwrap().len() == 3
    })
    .await;
    let web = built["accounts"]["web-1"].as_str().unwrap().to_owned();
    connect(&app, &tenant, &base, json!({"account_ids": [web]})).await;
    // A detection the tenant registered for the whole organization.
    expect_status(
        app.post(
            &format!("{t}/detections"),
            &tenant.key,
            json!({"name": "Exfiltration to other accounts", "source": "eventbridge_rule",
                   "techniques": [{"id": "T1537", "confidence": 0.8}],
                   "scope": {"type": "organization", "organization_id": org, "accounts": "all"}}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let sources: Set = ctid("amazon_guardduty").union(&ctid("aws_config")).cloned().collect();
    let coverage_path = format!("{t}/coverage/accounts/{web}");
    let before = ok(&app, &tenant, &coverage_path).await;
    assert_eq!(strings(&before["org_techniques"]), &sources | &set(&["T1537"]));

    // Its role can no longer be assumed: a new connection attempt fails and
    // the sources' detections stop applying to it; the registered one stays.
    let role = format!("arn:aws:iam::{web}:role/CoverwatchAudit");
    let reconnect = || async {
        let body = json!({"account_ids": [web]});
        expect_status(
            app.post(&format!("{base}/members/connect"), &tenant.key, body).await,
            StatusCode::OK,
        )
        .await
    };
    proxy.faults(json!({"deny_roles": [role]})).await;
    let failed = reconnect().await;
    assert_eq!(failed["results"][0]["status"], "error");
    let during = ok(&app, &tenant, &coverage_path).await;
    assert_eq!(strings(&during["org_techniques"]), set(&["T1537"]));

    // Reachable again: connecting it restores them.
    proxy.faults(json!({})).await;
    let again = reconnect().await;
    assert_eq!(again["results"][0]["status"], "already_connected");
    let after = ok(&app, &tenant, &coverage_path).await;
    assert_eq!(strings(&after["org_techniques"]), &sources | &set(&["T1537"]));
    app.caught_up(Some("coverage"), Duration::from_secs(20)).await;
    let differences = coverwatch_replay::rebuild::compare(&app.pool, read_models(), 3)
        .await
        .unwrap();
    assert!(differences.is_empty(), "{differences:?}");
}

/// Changes that move no figure (a detection whose techniques are all outside
/// the platform set, its rename, a second one covering what the first
/// covers) write no snapshot, so the live history equals a rebuild's.
#[tokio::test]
async fn changes_that_move_no_figure_write_no_snapshot_and_rebuild_equals_live() {
    let app = spawn_app_with(Arc::new(SystemClock), |_| {}).await;
    let tenant = app.create_tenant("no-figure").await;
    standalone_account(&app, &tenant, "444455556666").await;
    let detections = format!("/v1/tenants/{}/detections", tenant.id);
    let register = |name: &'static str, techniques: Value| {
        app.post(
            &detections,
            &tenant.key,
            json!({"name": name, "source": "custom", "techniques": techniques,
                   "scope": {"type": "account", "account_id": "444455556666"}}),
        )
    };
    // Two cloud techniques first: 2 of 151 is one of the ratios whose text
    // does not parse back to the same float by default.
    expect_status(
        register(
            "cloud",
            json!([{"id": "T1530", "confidence": 0.9}, {"id": "T1078.004", "confidence": 0.9}]),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let history = format!(
        "/v1/tenants/{}/coverage/accounts/444455556666/snapshots?from=2000-01-01T00:00:00Z&limit=500",
        tenant.id
    );
    let before = ok(&app, &tenant, &history).await["items"].as_array().unwrap().len();
    // OS Credential Dumping is no cloud technique: the figures stay the same.
    let outside = expect_status(
        register("endpoint only", json!([{"id": "T1003", "confidence": 0.9}])).await,
        StatusCode::CREATED,
    )
    .await;
    expect_status(
        app.patch(
            &format!("{detections}/{}", outside["detection_id"].as_str().unwrap()),
            &tenant.key,
            json!({"name": "endpoint only, renamed"}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    expect_status(
        register("again", json!([{"id": "T1530", "confidence": 0.6}])).await,
        StatusCode::CREATED,
    )
    .await;
    let after = ok(&app, &tenant, &history).await["items"].as_array().unwrap().len();
    assert_eq!(after, before, "no figure moved, so no snapshot was taken");
    app.caught_up(Some("coverage"), Duration::from_secs(20)).await;
    let differences = coverwatch_replay::rebuild::compare(&app.pool, read_models(), 100)
        .await
        .unwrap();
    assert!(differences.is_empty(), "{differences:?}");
}
