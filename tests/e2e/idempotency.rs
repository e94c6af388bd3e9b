//! `Idempotency-Key`: a retried POST returns the first result and appends nothing.

use crate::helpers::{ADMIN_TOKEN, expect_problem, expect_status, spawn_app};
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn a_retry_with_the_same_key_returns_the_first_result_and_appends_nothing() {
    let app = spawn_app().await;
    let sign_up = || {
        app.request(Method::POST, "/v1/tenants", None)
            .header("idempotency-key", "signup-1")
            .json(&json!({"name": "Once", "slug": "once", "owner_email": "o@once.test"}))
            .send()
    };
    let first = sign_up().await.unwrap();
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first = expect_status(first, StatusCode::CREATED).await;
    let events = app.event_count().await;

    let retry = sign_up().await.unwrap();
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    let retry = expect_status(retry, StatusCode::CREATED).await;
    assert_eq!(retry, first, "the same tenant, the same key");
    assert_eq!(app.event_count().await, events);

    // At rest, neither the idempotency key nor the API key it returned is readable.
    let api_key = first["api_key"].as_str().unwrap();
    let rows: Vec<(String, Vec<u8>)> = sqlx::query_as("SELECT key_hash, response FROM idempotency_keys")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert!(!rows[0].0.contains("signup-1"));
    let stored = String::from_utf8_lossy(&rows[0].1);
    assert!(
        !stored.contains(api_key) && !stored.contains("cwk_"),
        "the response is stored in the clear"
    );

    // Concurrent retries of a member command: one invitation, one event.
    let tenant_id = first["id"].as_str().unwrap();
    let key = first["api_key"].as_str().unwrap();
    // FREE has no seat beyond the owner: the admin makes room.
    let room = app
        .request(
            Method::PUT,
            &format!("/v1/admin/tenants/{tenant_id}/overrides"),
            Some(ADMIN_TOKEN),
        )
        .json(&json!({"max_members": 5}))
        .send()
        .await
        .unwrap();
    expect_status(room, StatusCode::OK).await;
    let invite = || {
        app.request(Method::POST, &format!("/v1/tenants/{tenant_id}/invitations"), Some(key))
            .header("idempotency-key", "invite-ann")
            .json(&json!({"email": "ann@once.test", "role": "analyst"}))
            .send()
    };
    let results = futures::future::join_all((0..8).map(|_| invite())).await;
    let statuses: Vec<StatusCode> = results.into_iter().map(|r| r.unwrap().status()).collect();
    assert!(
        statuses
            .iter()
            .all(|s| [StatusCode::CREATED, StatusCode::CONFLICT].contains(s)),
        "{statuses:?}"
    );
    let invited: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'MemberInvited'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(invited, 1);

    // The same key for a different request is refused.
    let other = app
        .request(Method::POST, "/v1/tenants", None)
        .header("idempotency-key", "signup-1")
        .json(&json!({"name": "Other", "slug": "other", "owner_email": "o@other.test"}))
        .send()
        .await
        .unwrap();
    expect_problem(other, StatusCode::UNPROCESSABLE_ENTITY, "rule-violated").await;
    // One MemberInvited, and the admin's override.
    assert_eq!(app.event_count().await, events + 2);
}
