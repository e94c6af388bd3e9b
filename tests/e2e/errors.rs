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
