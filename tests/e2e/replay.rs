//! Replay for auditors: tamper detection, state as of an instant, signed
//! bundles verified offline, blue/green rebuilds under load, and the API.

use crate::helpers::{TestApp, TestTenant, expect_problem, expect_status, spawn_app, test_public_key};
use chrono::{DateTime, Utc};
use coverwatch_projections::read_models;
use coverwatch_replay::verify::{Report, verify_log};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

async fn settled(app: &TestApp) {
    // The digests subscriber is not awaited by commands: wait for all.
    app.caught_up(None, Duration::from_secs(10)).await;
}

async fn history(app: &TestApp, slug: &str) -> TestTenant {
    let tenant = app.create_tenant(slug).await;
    app.add_member(&tenant, &format!("ann@{slug}.test"), "analyst").await;
    app.add_member(&tenant, &format!("bob@{slug}.test"), "auditor").await;
    expect_status(
        app.patch(
            &format!("/v1/tenants/{}", tenant.id),
            &tenant.key,
            json!({"industry": "retail"}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    settled(app).await;
    tenant
}

/// As a superuser: switch off the immutability triggers and run `sql`.
async fn tamper(app: &TestApp, sql: &str, bind: &str) {
    let mut conn = PgConnection::connect(&app.database_url).await.unwrap();
    sqlx::query("ALTER TABLE events DISABLE TRIGGER USER")
        .execute(&mut conn)
        .await
        .unwrap();
    let changed = sqlx::query(sql)
        .bind(bind)
        .execute(&mut conn)
        .await
        .unwrap()
        .rows_affected();
    assert!(changed > 0, "the tampering changed nothing: {sql}");
    sqlx::query("ALTER TABLE events ENABLE TRIGGER USER")
        .execute(&mut conn)
        .await
        .unwrap();
}

async fn verified(app: &TestApp) -> Report {
    verify_log(&app.pool, None, Some(test_public_key())).await.unwrap()
}

#[tokio::test]
async fn verify_names_an_altered_payload_byte() {
    let app = spawn_app().await;
    let tenant = history(&app, "tamper-a").await;
    assert!(verified(&app).await.ok());
    tamper(
        &app,
        "UPDATE events SET payload = replace(payload::text, 'retail', 'retaiL')::json WHERE aggregate_id = $1 AND event_type = 'ProfileUpdated'",
        &tenant.id,
    )
    .await;
    let report = verified(&app).await;
    let first = report.divergence.clone().expect("detected");
    assert_eq!(
        (first.aggregate_id.as_str(), first.sequence),
        (tenant.id.as_str(), 9),
        "{report:#?}"
    );
    assert!(first.problem.starts_with("hash mismatch"), "{first:?}");
    // The per-tenant API says the same.
    let api = expect_status(
        app.get(&format!("/v1/tenants/{}/verify", tenant.id), &tenant.key).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(api["ok"], false);
    assert_eq!(api["divergence"]["sequence"], 9);
}

#[tokio::test]
async fn verify_names_an_event_deleted_in_the_middle_of_an_aggregate() {
    let app = spawn_app().await;
    let tenant = history(&app, "tamper-b").await;
    tamper(
        &app,
        "DELETE FROM events WHERE aggregate_id = $1 AND sequence = 3",
        &tenant.id,
    )
    .await;
    let report = verified(&app).await;
    let first = report.divergence.clone().expect("detected");
    assert_eq!(first.aggregate_id, tenant.id);
    assert_eq!(first.sequence, 4, "{report:#?}");
    assert!(first.problem.starts_with("sequence gap"));
    assert_eq!((first.expected.as_str(), first.found.as_str()), ("3", "4"));
}

#[tokio::test]
async fn verify_names_an_aggregates_deleted_newest_event() {
    let app = spawn_app().await;
    let tenant = history(&app, "tamper-c").await;
    tamper(
        &app,
        "DELETE FROM events WHERE aggregate_id = $1 AND sequence = 9",
        &tenant.id,
    )
    .await;
    let report = verified(&app).await;
    let named = report
        .divergences
        .iter()
        .find(|d| d.aggregate_id == tenant.id)
        .unwrap_or_else(|| panic!("not named: {report:#?}"));
    assert_eq!(named.problem, "newest events removed");
    assert_eq!(named.sequence, 9);
    assert!(
        report
            .divergences
            .iter()
            .any(|d| d.problem.contains("digest differs from its signed checkpoint"))
    );
}

#[tokio::test]
async fn verify_names_a_whole_deleted_aggregate() {
    let app = spawn_app().await;
    let keep = history(&app, "tamper-keep").await;
    let gone = history(&app, "tamper-d").await;
    tamper(&app, "DELETE FROM events WHERE aggregate_id = $1", &gone.id).await;
    let report = verified(&app).await;
    let named = report
        .divergences
        .iter()
        .find(|d| d.aggregate_id == gone.id)
        .unwrap_or_else(|| panic!("{report:#?}"));
    assert!(named.problem.starts_with("aggregate removed"), "{named:?}");
    assert!(
        report
            .divergences
            .iter()
            .any(|d| d.problem.starts_with("global digest differs")),
        "{report:#?}"
    );
    // The other tenant's own history still verifies.
    let other = verify_log(&app.pool, Some(keep.id.parse().unwrap()), Some(test_public_key()))
        .await
        .unwrap();
    assert!(other.ok(), "{other:#?}");
    assert!(other.checkpoints > 0);
}

#[tokio::test]
async fn a_forged_checkpoint_signature_is_caught() {
    let app = spawn_app().await;
    history(&app, "forged").await;
    let mut conn = PgConnection::connect(&app.database_url).await.unwrap();
    sqlx::query("UPDATE digest_checkpoints SET count = count + 1 WHERE scope = 'global' AND position = (SELECT max(position) FROM digest_checkpoints)")
        .execute(&mut conn)
        .await
        .unwrap();
    let report = verified(&app).await;
    assert!(
        report
            .divergences
            .iter()
            .any(|d| d.problem.starts_with("checkpoint signature invalid")),
        "{report:#?}"
    );
}

async fn state(app: &TestApp, tenant: &TestTenant, at: DateTime<Utc>) -> Value {
    let response = app
        .request(
            Method::GET,
            &format!("/v1/tenants/{}/state", tenant.id),
            Some(&tenant.key),
        )
        .query(&[("as_of", at.to_rfc3339())])
        .send()
        .await
        .unwrap();
    expect_status(response, StatusCode::OK).await
}

async fn pause() -> DateTime<Utc> {
    tokio::time::sleep(Duration::from_millis(20)).await;
    let now = Utc::now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    now
}

#[tokio::test]
async fn the_state_as_of_any_instant_is_exactly_what_it_was() {
    let app = spawn_app().await;
    let before = pause().await;
    let tenant = app.create_tenant("as-of").await;
    let t1 = pause().await;
    let (ann, _) = app.add_member(&tenant, "ann@as-of.test", "analyst").await;
    let t2 = pause().await;
    let base = format!("/v1/tenants/{}", tenant.id);
    expect_status(
        app.patch(
            &base,
            &tenant.key,
            json!({"name": "As Of Corp", "industry": "insurance"}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    expect_status(
        app.patch(
            &format!("{base}/members/{ann}"),
            &tenant.key,
            json!({"role": "auditor"}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    let t3 = pause().await;
    assert_eq!(
        app.delete(&format!("{base}/members/{ann}"), &tenant.key).await.status(),
        StatusCode::NO_CONTENT
    );
    let t4 = pause().await;

    let response = app
        .request(Method::GET, &format!("{base}/state"), Some(&tenant.key))
        .query(&[("as_of", before.to_rfc3339())])
        .send()
        .await
        .unwrap();
    expect_problem(response, StatusCode::NOT_FOUND, "not-found").await;

    let at1 = state(&app, &tenant, t1).await;
    assert_eq!(at1["tenant"]["name"], "Tenant as-of");
    assert_eq!(at1["events"], 2);
    assert_eq!(at1["members"].as_array().unwrap().len(), 1);
    assert_eq!(at1["aggregate"]["version"], 2);

    let at2 = state(&app, &tenant, t2).await;
    let members = at2["members"].as_array().unwrap();
    assert_eq!(members.len(), 2);
    let ann_then = members.iter().find(|m| m["id"] == ann.as_str()).unwrap();
    assert_eq!(
        (ann_then["role"].as_str(), ann_then["status"].as_str()),
        (Some("analyst"), Some("active"))
    );
    assert_eq!(at2["invitations"][0]["status"], "accepted");
    assert_eq!(at2["api_keys"].as_array().unwrap().len(), 2);
    assert!(at2["api_keys"][0].get("secret_hash").is_none());
    assert_eq!(at2["tenant"]["industry"], Value::Null);

    let at3 = state(&app, &tenant, t3).await;
    assert_eq!(at3["tenant"]["name"], "As Of Corp");
    assert_eq!(at3["tenant"]["industry"], "insurance");
    let ann_then = at3["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == ann.as_str())
        .unwrap()
        .clone();
    assert_eq!(ann_then["role"], "auditor");

    let at4 = state(&app, &tenant, t4).await;
    let ann_then = at4["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == ann.as_str())
        .unwrap()
        .clone();
    assert_eq!(ann_then["status"], "removed");
    assert_eq!(at4["aggregate"]["version"], 8);

    // Now equals the live read model.
    let live = expect_status(app.get(&base, &tenant.key).await, StatusCode::OK).await;
    assert_eq!(at4["tenant"]["version"], live["version"]);
    assert_eq!(at4["tenant"]["name"], live["name"]);
}

#[tokio::test]
async fn an_exported_bundle_verifies_offline_and_a_modified_one_does_not() {
    let app = spawn_app().await;
    let tenant = history(&app, "bundled").await;
    history(&app, "neighbour").await;
    let dir = std::env::temp_dir().join(format!("coverwatch-bundle-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bundle.tar");
    let signer = coverwatch_projections::signing::AuditSigner::from_hex(crate::helpers::SIGNING_KEY).unwrap();
    let manifest = coverwatch_replay::bundle::export(&app.pool, &signer, tenant.id.parse().unwrap(), None, None, &path)
        .await
        .unwrap();
    // Its Tenant events plus SubscriptionCreated and the test override.
    assert_eq!(manifest.events, 9 + 2, "only this tenant's events");

    let report = coverwatch_replay::bundle::verify_bundle(&path, Some(&test_public_key())).unwrap();
    assert!(report.ok(), "{report:#?}");
    assert_eq!(report.events, 9 + 2);
    assert!(report.checkpoints > 0, "signed tenant checkpoints are in the bundle");

    // The documented procedure with standard tools.
    let unpacked = dir.join("unpacked");
    std::fs::create_dir_all(&unpacked).unwrap();
    let run = |program: &str, args: &[&str]| {
        let output = Command::new(program)
            .args(args)
            .current_dir(&unpacked)
            .output()
            .unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr),
        )
    };
    assert!(run("tar", &["-xf", path.to_str().unwrap()]).0);
    let (ok, out) = run("sha256sum", &["-c", "SHA256SUMS"]);
    assert!(ok, "{out}");
    let (ok, out) = run(
        "openssl",
        &[
            "pkeyutl",
            "-verify",
            "-pubin",
            "-inkey",
            "public-key.pem",
            "-rawin",
            "-in",
            "manifest.json",
            "-sigfile",
            "manifest.sig",
        ],
    );
    assert!(ok && out.contains("Signature Verified Successfully"), "{out}");
    let published = expect_status(
        app.request(Method::GET, "/v1/audit/public-key", None)
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        std::fs::read_to_string(unpacked.join("public-key.pem")).unwrap(),
        published["pem"].as_str().unwrap()
    );

    // Modify one byte of one event: both ways of verifying fail.
    let events = unpacked.join("events.jsonl");
    let text = std::fs::read_to_string(&events)
        .unwrap()
        .replacen("retail", "retaiL", 1);
    std::fs::write(&events, text).unwrap();
    let (ok, _) = run("sha256sum", &["-c", "SHA256SUMS"]);
    assert!(!ok);
    let modified = dir.join("modified.tar");
    assert!(
        run(
            "tar",
            &[
                "-cf",
                modified.to_str().unwrap(),
                "events.jsonl",
                "checkpoints.jsonl",
                "manifest.json",
                "manifest.sig",
                "public-key.pem",
                "SHA256SUMS"
            ]
        )
        .0
    );
    let error = coverwatch_replay::bundle::verify_bundle(&modified, Some(&test_public_key())).unwrap_err();
    assert!(error.to_string().contains("events.jsonl was modified"), "{error}");
    // A bundle signed by another key is refused as to origin.
    let error = coverwatch_replay::bundle::verify_bundle(&path, Some(&"00".repeat(32))).unwrap_err();
    assert!(error.to_string().contains("not the published key"), "{error}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_rebuild_under_load_switches_over_and_equals_the_live_models() {
    let app = spawn_app().await;
    let tenant = history(&app, "rebuilt").await;
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (app, stop, tenant) = (app.clone_client(), stop.clone(), tenant.clone());
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let response = app
                    .patch(
                        &format!("/v1/tenants/{}", tenant.id),
                        &tenant.key,
                        json!({"name": format!("Load {n}")}),
                    )
                    .await;
                let status = response.status();
                assert_eq!(status, StatusCode::OK, "{}", response.text().await.unwrap());
                // Queries keep working during the rebuild.
                let members = app
                    .get(&format!("/v1/tenants/{}/members", tenant.id), &tenant.key)
                    .await;
                assert_eq!(members.status(), StatusCode::OK);
            }
            n
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let summary = coverwatch_replay::rebuild::rebuild(&app.pool, read_models(), 50, &mut |_| {})
        .await
        .unwrap();
    assert!(summary.events > 0);
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::SeqCst);
    let writes = writer.await.unwrap();
    assert!(writes > 3, "load kept flowing: {writes}");
    settled(&app).await;
    let differences = coverwatch_replay::rebuild::compare(&app.pool, read_models(), 100)
        .await
        .unwrap();
    assert!(differences.is_empty(), "{differences:?}");
    // And the switched tables keep serving and being fed.
    let after = expect_status(
        app.patch(
            &format!("/v1/tenants/{}", tenant.id),
            &tenant.key,
            json!({"name": "After"}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(after["name"], "After");
    let log = expect_status(
        app.get(&format!("/v1/tenants/{}/audit-log?limit=1", tenant.id), &tenant.key)
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(log["items"][0]["action"], "ProfileUpdated");
}

#[tokio::test]
async fn auditors_read_the_event_stream_and_stream_the_audit_log() {
    let app = spawn_app().await;
    let tenant = history(&app, "streams").await;
    let (_, auditor) = app.add_member(&tenant, "carol@streams.test", "auditor").await;
    let (_, analyst) = app.add_member(&tenant, "dan@streams.test", "analyst").await;
    let base = format!("/v1/tenants/{}", tenant.id);

    let mut all = vec![];
    let mut after = 0i64;
    loop {
        let page = expect_status(
            app.get(&format!("{base}/events?after_position={after}&limit=3"), &auditor)
                .await,
            StatusCode::OK,
        )
        .await;
        all.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => after = next.parse().unwrap(),
            None => break,
        }
    }
    assert_eq!(all.len(), 15 + 2, "with the subscription's two events");
    assert!(
        all.iter()
            .all(|e| e["hash"].as_str().unwrap().len() == 64 && e["tenant_id"] == tenant.id.as_str())
    );
    assert_eq!(all[0]["event_type"], "TenantCreated");
    assert_eq!(all[1]["prev_hash"], all[0]["hash"]);

    expect_problem(
        app.get(&format!("{base}/events"), &analyst).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    expect_problem(
        app.get(&format!("{base}/audit-log/export"), &analyst).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;

    let jsonl = app
        .get(&format!("{base}/audit-log/export?format=jsonl"), &auditor)
        .await;
    assert_eq!(jsonl.headers()["content-type"], "application/x-ndjson");
    let text = jsonl.text().await.unwrap();
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 15 + 2);
    assert_eq!(lines[0]["action"], "TenantCreated");

    let csv = app.get(&format!("{base}/audit-log/export?format=csv"), &auditor).await;
    assert_eq!(csv.headers()["content-type"], "text/csv; charset=utf-8");
    let text = csv.text().await.unwrap();
    let rows: Vec<&str> = text.lines().collect();
    assert_eq!(rows.len(), 16 + 2, "a header and one row per event");
    assert!(rows[0].starts_with("position,event_id,recorded_at,actor,action"));
    assert!(
        rows.iter()
            .any(|r| r.contains("\"profile updated: industry\"") || r.contains("profile updated: industry"))
    );

    let bad = app.get(&format!("{base}/audit-log/export?format=xml"), &auditor).await;
    expect_problem(bad, StatusCode::UNPROCESSABLE_ENTITY, "validation").await;
    let verify = expect_status(app.get(&format!("{base}/verify"), &auditor).await, StatusCode::OK).await;
    assert_eq!(verify["ok"], true, "{verify}");
}
