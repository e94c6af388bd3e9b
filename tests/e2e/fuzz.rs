//! Fuzzing from the OpenAPI document: schemathesis (PyPI) generates requests
//! for every operation (valid and invalid, a bounded number each, with the
//! owner's key and the tenant's id) against the real server with Stripe
//! (localstripe) configured. No response is a 5xx, no request that was
//! refused appended anything to the log (every event's request answered
//! 2xx), and the log verifies afterwards.

use crate::helpers::{python, spawn_app_with, test_public_key};
use crate::stripe_fakes::{Localstripe, SECRET_KEY, StripeFront, WEBHOOK_SECRET};
use coverwatch_domain::clock::SystemClock;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;

#[tokio::test]
async fn fuzzing_every_operation_finds_no_server_error_and_refused_requests_write_nothing() {
    let stripe = Localstripe::start().await;
    let front = StripeFront::start(&stripe).await;
    let base = front.base.clone();
    let app = spawn_app_with(Arc::new(SystemClock), move |settings| {
        settings.stripe.secret_key = Some(SECRET_KEY.to_owned().into());
        settings.stripe.webhook_secret = Some(WEBHOOK_SECRET.to_owned().into());
        settings.stripe.api_base = Some(base);
        // Nowhere to reach: discovery and role checks fail fast, as answers.
        settings.aws.endpoint_url = Some("http://127.0.0.1:9".into());
    })
    .await;
    let tenant = app.create_tenant("fuzzed").await;
    app.set_overrides(
        &tenant,
        json!({"max_accounts": "unlimited", "org_features": true, "history_retention_days": 400}),
    )
    .await;
    let before: i64 = sqlx::query_scalar("SELECT coalesce(max(position), 0) FROM events")
        .fetch_one(&app.pool)
        .await
        .unwrap();

    let dir = std::env::temp_dir().join(format!("coverwatch-fuzz-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("schemathesis.toml"),
        format!("[parameters]\ntenant_id = \"{}\"\n", tenant.id),
    )
    .unwrap();
    let har = dir.join("requests.har");
    let schemathesis = python().parent().unwrap().join("schemathesis");
    let output = tokio::process::Command::new(&schemathesis)
        .current_dir(&dir)
        .arg("--config-file")
        .arg(dir.join("schemathesis.toml"))
        .args(["run", &format!("{}/openapi.json", app.address)])
        .args(["--header", &format!("Authorization: Bearer {}", tenant.key)])
        .args([
            "--checks",
            "not_a_server_error",
            "--max-examples",
            "10",
            "--seed",
            "20261202",
        ])
        .args(["--workers", "2", "--request-timeout", "30", "--report", "har"])
        .arg("--report-har-path")
        .arg(&har)
        .output()
        .await
        .expect("schemathesis runs (make test installs it into .coverwatch/venv)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "schemathesis found failures:\n{stdout}");

    // Every response, by the request id the server gave it.
    let har: Value = serde_json::from_str(&std::fs::read_to_string(&har).unwrap()).unwrap();
    let entries = har["log"]["entries"].as_array().unwrap();
    let mut answered: HashMap<String, u16> = HashMap::new();
    for entry in entries {
        let status = entry["response"]["status"].as_u64().unwrap() as u16;
        assert!(status < 500, "{entry}");
        let id = entry["response"]["headers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| {
                h["name"]
                    .as_str()
                    .is_some_and(|n| n.eq_ignore_ascii_case("x-request-id"))
            })
            .and_then(|h| h["value"].as_str())
            .unwrap_or_else(|| panic!("a response without X-Request-Id: {entry}"));
        answered.insert(id.to_owned(), status);
    }
    let operations: std::collections::BTreeSet<String> = entries
        .iter()
        .map(|e| e["request"]["method"].as_str().unwrap().to_owned())
        .collect();
    assert!(answered.len() > 500, "a real run: {} requests", answered.len());
    assert!(operations.len() >= 4, "every method: {operations:?}");

    // Nothing a refused request sent was appended.
    let events: Vec<(String, String, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT event_type, metadata ->> 'actor', metadata ->> 'request_id', metadata ->> 'correlation_id'
           FROM events WHERE position > $1",
    )
    .bind(before)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let mut from_requests = 0;
    for (event_type, actor, request_id, correlation_id) in &events {
        for id in [request_id, correlation_id].into_iter().flatten() {
            if let Some(status) = answered.get(id) {
                assert!(
                    (200..300).contains(status),
                    "{event_type} ({actor}) was appended by a request answered {status}"
                );
                from_requests += 1;
            }
        }
        if actor.starts_with("member:") {
            assert!(
                request_id.as_ref().is_some_and(|id| answered.contains_key(id)),
                "{event_type} by {actor} from a request the fuzzer did not send"
            );
        }
    }
    assert!(
        from_requests > 0,
        "the fuzzer's writes were accepted too: {} events",
        events.len()
    );

    let report = coverwatch_replay::verify::verify_log(&app.pool, None, Some(test_public_key()))
        .await
        .unwrap();
    assert!(report.ok(), "{report:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
