//! The OpenAPI document: 3.1, generated from the code, covering every route.

use crate::helpers::{expect_status, spawn_app};
use reqwest::{Method, StatusCode};

#[tokio::test]
async fn the_openapi_document_is_3_1_and_every_listed_route_is_served() {
    let app = spawn_app().await;
    let document = expect_status(
        app.request(Method::GET, "/openapi.json", None).send().await.unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(document["openapi"], "3.1.0");
    let paths = document["paths"].as_object().unwrap();
    let expected = [
        ("post", "/v1/tenants"),
        ("get", "/v1/tenants/{tenant_id}"),
        ("patch", "/v1/tenants/{tenant_id}"),
        ("delete", "/v1/tenants/{tenant_id}"),
        ("post", "/v1/tenants/{tenant_id}/invitations"),
        ("get", "/v1/tenants/{tenant_id}/invitations"),
        ("delete", "/v1/tenants/{tenant_id}/invitations/{invitation_id}"),
        ("post", "/v1/invitations/accept"),
        ("get", "/v1/tenants/{tenant_id}/members"),
        ("get", "/v1/tenants/{tenant_id}/members/{member_id}"),
        ("patch", "/v1/tenants/{tenant_id}/members/{member_id}"),
        ("delete", "/v1/tenants/{tenant_id}/members/{member_id}"),
        ("post", "/v1/tenants/{tenant_id}/members/{member_id}/suspend"),
        ("post", "/v1/tenants/{tenant_id}/members/{member_id}/reactivate"),
        ("post", "/v1/tenants/{tenant_id}/transfer-ownership"),
        ("post", "/v1/tenants/{tenant_id}/api-keys"),
        ("get", "/v1/tenants/{tenant_id}/api-keys"),
        ("delete", "/v1/tenants/{tenant_id}/api-keys/{key_id}"),
        ("get", "/v1/tenants/{tenant_id}/audit-log"),
        ("get", "/v1/admin/tenants"),
        ("post", "/v1/admin/tenants/{tenant_id}/suspend"),
        ("post", "/v1/admin/tenants/{tenant_id}/reactivate"),
        ("get", "/v1/tenants/{tenant_id}/audit-log/export"),
        ("get", "/v1/tenants/{tenant_id}/events"),
        ("get", "/v1/tenants/{tenant_id}/state"),
        ("get", "/v1/tenants/{tenant_id}/verify"),
        ("get", "/v1/audit/public-key"),
        ("get", "/healthz"),
        ("get", "/readyz"),
        ("get", "/metrics"),
        ("get", "/openapi.json"),
        ("get", "/v1/plans"),
        ("get", "/v1/tenants/{tenant_id}/subscription"),
        ("post", "/v1/tenants/{tenant_id}/subscription/checkout"),
        ("post", "/v1/tenants/{tenant_id}/subscription/portal"),
        ("post", "/v1/tenants/{tenant_id}/subscription/change-plan"),
        ("post", "/v1/tenants/{tenant_id}/subscription/cancel"),
        ("post", "/v1/tenants/{tenant_id}/subscription/reactivate"),
        ("get", "/v1/tenants/{tenant_id}/invoices"),
        ("get", "/v1/tenants/{tenant_id}/usage"),
        ("post", "/v1/webhooks/stripe"),
        ("get", "/v1/admin/subscriptions"),
        ("get", "/v1/admin/mrr"),
        ("put", "/v1/admin/tenants/{tenant_id}/overrides"),
        ("post", "/v1/admin/tenants/{tenant_id}/subscription/grace-period"),
        ("post", "/v1/admin/tenants/{tenant_id}/subscription/legacy-migration"),
        ("get", "/v1/admin/stripe/unmatched-events"),
        ("post", "/v1/tenants/{tenant_id}/cloud-accounts"),
        ("get", "/v1/tenants/{tenant_id}/cloud-accounts"),
        ("post", "/v1/tenants/{tenant_id}/cloud-accounts/{account_id}/disconnect"),
        ("post", "/v1/tenants/{tenant_id}/cloud-organizations"),
        ("get", "/v1/tenants/{tenant_id}/cloud-organizations"),
        ("post", "/v1/tenants/{tenant_id}/cloud-organizations/{org_id}/discover"),
        (
            "get",
            "/v1/tenants/{tenant_id}/cloud-organizations/{org_id}/discover/{run_id}",
        ),
        ("get", "/v1/tenants/{tenant_id}/cloud-organizations/{org_id}"),
        ("get", "/v1/tenants/{tenant_id}/cloud-organizations/{org_id}/hierarchy"),
        ("get", "/v1/tenants/{tenant_id}/cloud-organizations/{org_id}/members"),
        (
            "post",
            "/v1/tenants/{tenant_id}/cloud-organizations/{org_id}/members/connect",
        ),
        (
            "post",
            "/v1/tenants/{tenant_id}/cloud-organizations/{org_id}/members/{account_id}/disconnect",
        ),
        (
            "get",
            "/v1/tenants/{tenant_id}/cloud-organizations/{org_id}/role-template",
        ),
        ("post", "/v1/tenants/{tenant_id}/detections"),
        ("get", "/v1/tenants/{tenant_id}/detections"),
        ("get", "/v1/tenants/{tenant_id}/detections/{detection_id}"),
        ("patch", "/v1/tenants/{tenant_id}/detections/{detection_id}"),
        ("delete", "/v1/tenants/{tenant_id}/detections/{detection_id}"),
        ("post", "/v1/tenants/{tenant_id}/detections/{detection_id}/disable"),
        ("post", "/v1/tenants/{tenant_id}/detections/{detection_id}/enable"),
        ("get", "/v1/tenants/{tenant_id}/cloud-accounts/{account_id}"),
        ("get", "/v1/tenants/{tenant_id}/coverage/accounts/{account_id}"),
        (
            "get",
            "/v1/tenants/{tenant_id}/coverage/accounts/{account_id}/navigator-layer",
        ),
        ("get", "/v1/tenants/{tenant_id}/coverage/organizations/{org_id}"),
        (
            "get",
            "/v1/tenants/{tenant_id}/coverage/organizations/{org_id}/snapshots",
        ),
        (
            "get",
            "/v1/tenants/{tenant_id}/coverage/accounts/{account_id}/snapshots",
        ),
        (
            "get",
            "/v1/tenants/{tenant_id}/coverage/organizations/{org_id}/navigator-layer",
        ),
        ("post", "/v1/tenants/{tenant_id}/cloud-accounts/{account_id}/scan"),
        ("post", "/v1/tenants/{tenant_id}/cloud-organizations/{org_id}/scan"),
        ("get", "/v1/tenants/{tenant_id}/scans/{run_id}"),
        ("get", "/v1/tenants/{tenant_id}/cloud-accounts/{account_id}/inventory"),
        (
            "put",
            "/v1/tenants/{tenant_id}/cloud-accounts/{account_id}/scan-regions",
        ),
        (
            "put",
            "/v1/tenants/{tenant_id}/cloud-organizations/{org_id}/scan-regions",
        ),
    ];
    for (method, path) in expected {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} is missing from the document"
        );
    }
    // Conversely, every documented operation is routed (never the 404/405 fallback).
    let mut operations = 0;
    for (template, methods) in paths {
        for method in methods.as_object().unwrap().keys() {
            let path = template
                .replace("{tenant_id}", &uuid::Uuid::nil().to_string())
                .replace("{member_id}", &uuid::Uuid::nil().to_string())
                .replace("{key_id}", &uuid::Uuid::nil().to_string())
                .replace("{invitation_id}", &uuid::Uuid::nil().to_string());
            let response = app
                .request(method.to_uppercase().parse().unwrap(), &path, None)
                .send()
                .await
                .unwrap();
            let status = response.status();
            let body = response.text().await.unwrap();
            assert!(
                !body.contains("route not found") && status != StatusCode::METHOD_NOT_ALLOWED,
                "{method} {template}: {status} {body}"
            );
            operations += 1;
        }
    }
    assert_eq!(
        operations,
        expected.len(),
        "the document lists operations this test does not know"
    );

    let health = expect_status(
        app.request(Method::GET, "/healthz", None).send().await.unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(health["status"], "ok");
    let ready = expect_status(
        app.request(Method::GET, "/readyz", None).send().await.unwrap(),
        StatusCode::OK,
    )
    .await;
    let names: Vec<&str> = ready["subscribers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "audit_trail",
            "billing",
            "cloud",
            "coverage",
            "derived_detections",
            "digests",
            "directory",
            "inventory",
            "usage_thresholds"
        ],
        "no Kafka publisher without brokers"
    );
}

/// `/metrics` answers only a bearer of the metrics (or admin) token on the
/// API listener, and without credentials on the internal listener, which
/// also serves the probes; lag is counted up to a bound, never by scanning
/// the log.
#[tokio::test]
async fn metrics_need_a_token_or_the_internal_listener_and_lag_is_bounded() {
    let database_url = crate::helpers::fresh_database().await;
    let mut settings = crate::helpers::test_settings(&database_url);
    settings.http.metrics_token = Some("scrape-token".to_owned().into());
    settings.http.metrics_bind = Some("127.0.0.1:0".into());
    let pool = sqlx::PgPool::connect(&database_url).await.unwrap();
    let application = coverwatch_api::Application::build_with(
        settings,
        pool.clone(),
        std::sync::Arc::new(coverwatch_domain::clock::SystemClock),
    )
    .await
    .unwrap();
    let (port, internal) = (application.port(), application.metrics_port().unwrap());
    tokio::spawn(application.run_until_stopped());
    let http = reqwest::Client::new();
    let get = |url: String, token: Option<&'static str>| {
        let request = http.get(url);
        match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
        .send()
    };
    let api = format!("http://127.0.0.1:{port}/metrics");
    assert_eq!(get(api.clone(), None).await.unwrap().status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        get(api.clone(), Some("wrong")).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get(api.clone(), Some("scrape-token")).await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(
        get(api, Some(crate::helpers::ADMIN_TOKEN)).await.unwrap().status(),
        StatusCode::OK
    );
    let scraped = get(format!("http://127.0.0.1:{internal}/metrics"), None).await.unwrap();
    assert_eq!(scraped.status(), StatusCode::OK);
    assert!(scraped.text().await.unwrap().contains("coverwatch_subscriber_position"));
    let probe = get(format!("http://127.0.0.1:{internal}/readyz"), None).await.unwrap();
    assert_eq!(probe.status(), StatusCode::OK);

    // A subscriber far behind: its lag is counted up to 10,000.
    sqlx::query("INSERT INTO subscriber_checkpoints (name, position) VALUES ('stalled', 0)")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         SELECT 'probe', 'p', n, 'Probed', '1.0', '{}'::json,
                json_build_object('tenant_id', '00000000-0000-0000-0000-000000000000', 'actor', 'system',
                                  'request_id', 'r', 'correlation_id', 'c', 'causation_id', 'c')
           FROM generate_series(1, 10050) n",
    )
    .execute(&pool)
    .await
    .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let ready: serde_json::Value = get(format!("http://127.0.0.1:{port}/readyz"), None)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let stalled = ready["subscribers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "stalled")
        .unwrap()
        .clone();
    assert_eq!(stalled["lag_events"], 10_000, "{stalled}");
}
