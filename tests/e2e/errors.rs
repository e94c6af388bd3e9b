//! Bad input gets a clear problem+json 4xx and leaves no trace in the log.

use crate::helpers::{expect_problem, spawn_app};
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn bad_input_is_refused_clearly_and_writes_nothing() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("strict").await;
    let path = format!("/v1/tenants/{}", tenant.id);
    let before = app.event_count().await;
    let send = |method: Method, path: String, body: &'static str| {
        app.request(method, &path, Some(&tenant.key))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };

    let malformed = send(Method::PATCH, path.clone(), "{\"name\": ").await.unwrap();
    let problem = expect_problem(malformed, StatusCode::BAD_REQUEST, "bad-request").await;
    assert!(problem["detail"].as_str().unwrap().contains("malformed JSON"));

    let unknown = send(Method::PATCH, path.clone(), "{\"nmae\": \"typo\"}").await.unwrap();
    let problem = expect_problem(unknown, StatusCode::UNPROCESSABLE_ENTITY, "validation").await;
    assert!(
        problem["errors"][0]["message"].as_str().unwrap().contains("nmae"),
        "{problem}"
    );

    let wrong_type = send(Method::PATCH, path.clone(), "{\"name\": 42}").await.unwrap();
    let problem = expect_problem(wrong_type, StatusCode::UNPROCESSABLE_ENTITY, "validation").await;
    assert_eq!(problem["errors"][0]["field"], "name", "{problem}");

    let invalid_values = app
        .request(Method::POST, "/v1/tenants", None)
        .json(&json!({"name": " ", "slug": "Bad Slug", "owner_email": "not-an-email"}))
        .send()
        .await
        .unwrap();
    let problem = expect_problem(invalid_values, StatusCode::UNPROCESSABLE_ENTITY, "validation").await;
    let fields: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        ["name", "slug", "owner_email"],
        "every bad field is reported at once"
    );

    let oversized = app
        .request(Method::PATCH, &path, Some(&tenant.key))
        .json(&json!({"name": "x".repeat(200_000)}))
        .send()
        .await
        .unwrap();
    expect_problem(oversized, StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large").await;

    let not_json = app
        .request(Method::PATCH, &path, Some(&tenant.key))
        .header("content-type", "text/plain")
        .body("name=x")
        .send()
        .await
        .unwrap();
    expect_problem(not_json, StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type").await;

    let bad_id = app.get("/v1/tenants/not-a-uuid", &tenant.key).await;
    let problem = expect_problem(bad_id, StatusCode::BAD_REQUEST, "bad-request").await;
    assert!(problem["detail"].as_str().unwrap().contains("invalid identifier"));

    let bad_query = app.get(&format!("{path}/members?limit=0"), &tenant.key).await;
    expect_problem(bad_query, StatusCode::UNPROCESSABLE_ENTITY, "validation").await;
    let bad_cursor = app.get(&format!("{path}/audit-log?cursor=abc"), &tenant.key).await;
    expect_problem(bad_cursor, StatusCode::UNPROCESSABLE_ENTITY, "validation").await;
    let bad_if_match = app
        .request(Method::PATCH, &path, Some(&tenant.key))
        .header("if-match", "\"seven\"")
        .json(&json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    expect_problem(bad_if_match, StatusCode::UNPROCESSABLE_ENTITY, "validation").await;

    let no_route = app.get("/v1/nothing-here", &tenant.key).await;
    expect_problem(no_route, StatusCode::NOT_FOUND, "not-found").await;
    let wrong_method = app.request(Method::PUT, &path, Some(&tenant.key)).send().await.unwrap();
    expect_problem(wrong_method, StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed").await;

    assert_eq!(app.event_count().await, before, "no refused request reached the log");
}

/// A NUL character reaches PostgreSQL as an error (it refuses NUL in text
/// and JSON): it is refused at the edge, in the path, the query and any
/// JSON string, as 422, with nothing written.
#[tokio::test]
async fn nul_characters_are_refused_everywhere_and_write_nothing() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("nul").await;
    let before = app.event_count().await;
    let id = &tenant.id;
    for query in [
        format!("/v1/tenants/{id}/audit-log?actor=member%00x"),
        format!("/v1/tenants/{id}/audit-log?action=Member%00Invited"),
        format!("/v1/tenants/{id}/audit-log?resource=tenant%00"),
        format!("/v1/tenants/{id}/audit-log?cursor=12%0034"),
        format!("/v1/tenants/{id}/detections?source=custom%00"),
        format!(
            "/v1/tenants/{id}/cloud-organizations/{}/members?path_prefix=Root%00",
            uuid::Uuid::new_v4()
        ),
        format!("/v1/tenants/{id}/coverage/accounts/1111%0011111111"),
    ] {
        let response = app.get(&query, &tenant.key).await;
        let problem = expect_problem(response, StatusCode::UNPROCESSABLE_ENTITY, "validation").await;
        assert!(
            problem["errors"][0]["message"].as_str().unwrap().contains("NUL"),
            "{query}: {problem}"
        );
    }
    let bodies = [
        (
            Method::POST,
            format!("/v1/tenants/{id}/cloud-accounts"),
            Some(tenant.key.as_str()),
            json!({"account_id": "111111111111", "alias": "a\u{0}b", "region": "us-east-1",
                   "role_arn": "arn:aws:iam::111111111111:role/CoverwatchAudit", "environment": "production"}),
        ),
        (
            Method::PATCH,
            format!("/v1/tenants/{id}"),
            Some(tenant.key.as_str()),
            json!({"name": "Acme\u{0}"}),
        ),
        (
            Method::POST,
            format!("/v1/admin/tenants/{id}/suspend"),
            Some(crate::helpers::ADMIN_TOKEN),
            json!({"reason": "unpaid\u{0}"}),
        ),
        (
            Method::POST,
            format!("/v1/admin/tenants/{id}/subscription/grace-period"),
            Some(crate::helpers::ADMIN_TOKEN),
            json!({"until": "2099-01-01T00:00:00Z", "reason": "\u{0}"}),
        ),
    ];
    for (method, path, key, body) in bodies {
        let response = app.request(method, &path, key).json(&body).send().await.unwrap();
        let problem = expect_problem(response, StatusCode::UNPROCESSABLE_ENTITY, "validation").await;
        assert_eq!(problem["errors"][0]["field"], "body", "{path}: {problem}");
    }
    // An escaped backslash followed by the text "u0000" is not a NUL.
    let response = app
        .request(Method::PATCH, &format!("/v1/tenants/{id}"), Some(&tenant.key))
        .header("content-type", "application/json")
        .body(r#"{"industry": "back\\u0000slash"}"#)
        .send()
        .await
        .unwrap();
    let updated = crate::helpers::expect_status(response, StatusCode::OK).await;
    assert_eq!(updated["industry"], "back\\u0000slash");
    assert_eq!(app.event_count().await, before + 1, "only the valid update was written");
}

/// Every list checks its cursor; every oversized body is a problem.
#[tokio::test]
async fn lists_refuse_foreign_cursors_and_the_webhook_answers_413_as_problem_json() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("cursors").await;
    let accounts = app
        .get(
            &format!("/v1/tenants/{}/cloud-accounts?cursor=not-an-account", tenant.id),
            &tenant.key,
        )
        .await;
    let problem = expect_problem(accounts, StatusCode::UNPROCESSABLE_ENTITY, "validation").await;
    assert_eq!(problem["errors"][0]["field"], "cursor");
    let unmatched = app
        .get(
            "/v1/admin/stripe/unmatched-events?cursor=%27%20OR%201%3D1",
            crate::helpers::ADMIN_TOKEN,
        )
        .await;
    let problem = expect_problem(unmatched, StatusCode::UNPROCESSABLE_ENTITY, "validation").await;
    assert_eq!(problem["errors"][0]["field"], "cursor");
    let oversized = app
        .request(Method::POST, "/v1/webhooks/stripe", None)
        .header("stripe-signature", "t=1,v1=00")
        .body(vec![b'x'; 200_000])
        .send()
        .await
        .unwrap();
    expect_problem(oversized, StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large").await;
}
