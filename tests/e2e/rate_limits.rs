//! Rate limits hold across API processes (counted in PostgreSQL), say where
//! the client stands (`RateLimit-Policy` / `RateLimit`, IETF draft) and keep
//! `Retry-After` on 429; sign-up, invitation acceptance and failed
//! authentication are limited per client address.

use crate::helpers::{TestApp, expect_problem, expect_status, spawn_app_with};
use chrono::Utc;
use coverwatch_domain::clock::{ManualClock, SystemClock};
use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

fn field(response: &Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name}"))
        .to_str()
        .unwrap()
        .to_owned()
}

async fn counters(app: &TestApp, bucket: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM rate_limit_counters WHERE bucket = $1")
        .bind(bucket)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_plans_rate_holds_across_api_processes_and_every_answer_says_where_the_client_stands() {
    let clock = ManualClock::at(Utc::now());
    let first = spawn_app_with(Arc::new(clock.clone()), |s| s.subscribers.settle_interval_ms = 100).await;
    let second = first.another_api_process(Arc::new(clock.clone()), |_| {}).await;
    let tenant = first.create_free_tenant("paced").await;
    first.set_overrides(&tenant, json!({"api_rate_per_minute": 6})).await;
    let path = format!("/v1/tenants/{}", tenant.id);

    let mut statuses = vec![];
    for i in 0..10 {
        let process = if i % 2 == 0 { &first } else { &second };
        let response = process.get(&path, &tenant.key).await;
        assert_eq!(field(&response, "ratelimit-policy"), "\"tenant\";q=6;w=60");
        let remaining = 6u32.saturating_sub(i + 1);
        assert_eq!(
            field(&response, "ratelimit"),
            format!("\"tenant\";r={remaining};t=60"),
            "request {i}"
        );
        statuses.push(response.status().as_u16());
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(field(&response, "retry-after"), "60");
            let problem = expect_problem(response, StatusCode::TOO_MANY_REQUESTS, "rate-limited").await;
            assert!(problem["detail"].as_str().unwrap().contains("6 requests per minute"));
        }
    }
    assert_eq!(
        statuses,
        [200, 200, 200, 200, 200, 200, 429, 429, 429, 429],
        "six a minute across both processes, not six each"
    );

    // The window ends: the counter is forgotten (no row per tenant forever)
    // and the budget is whole again, on either process.
    clock.advance(chrono::Duration::seconds(61));
    let bucket = format!("tenant:{}", tenant.id);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while counters(&first, &bucket).await > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the ended window was never pruned"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let response = second.get(&path, &tenant.key).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(field(&response, "ratelimit"), "\"tenant\";r=5;t=60");
}

fn from(app: &TestApp, method: Method, path: &str, address: &str) -> reqwest::RequestBuilder {
    app.request(method, path, None).header("x-forwarded-for", address)
}

async fn sign_up(app: &TestApp, slug: &str, forwarded_for: &str) -> Response {
    from(app, Method::POST, "/v1/tenants", forwarded_for)
        .json(&json!({"name": slug, "slug": slug, "owner_email": format!("owner@{slug}.test")}))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn sign_up_invitation_acceptance_and_failed_authentication_are_limited_per_client_address() {
    let app = spawn_app_with(Arc::new(SystemClock), |s| {
        s.http.signups_per_hour = 3;
        s.http.invitation_accepts_per_hour = 2;
        s.http.auth_failures_per_hour = 4;
        // Behind one proxy: the client is the last X-Forwarded-For entry.
        s.http.trusted_proxy_hops = 1;
    })
    .await;

    // Sign-up: three an hour from one address.
    for i in 0..3 {
        let response = sign_up(&app, &format!("busy-{i}"), "198.51.100.1").await;
        assert_eq!(field(&response, "ratelimit-policy"), "\"sign-up\";q=3;w=3600");
        expect_status(response, StatusCode::CREATED).await;
    }
    let events = app.event_count().await;
    let refused = sign_up(&app, "busy-3", "198.51.100.1").await;
    let retry_after: u64 = field(&refused, "retry-after").parse().unwrap();
    assert!((3590..=3600).contains(&retry_after), "{retry_after}");
    assert!(field(&refused, "ratelimit").starts_with("\"sign-up\";r=0;t="));
    expect_problem(refused, StatusCode::TOO_MANY_REQUESTS, "rate-limited").await;
    // Writing a different address further left changes nothing: only the
    // entry the trusted proxy appended counts.
    let spoofed = sign_up(&app, "busy-4", "203.0.113.9, 198.51.100.1").await;
    expect_problem(spoofed, StatusCode::TOO_MANY_REQUESTS, "rate-limited").await;
    assert_eq!(app.event_count().await, events, "a refused sign-up writes nothing");
    expect_status(sign_up(&app, "elsewhere", "198.51.100.2").await, StatusCode::CREATED).await;

    // Invitation acceptance: two attempts an hour from one address.
    let tenant = app.create_tenant("inviting").await;
    let invitation = expect_status(
        app.post(
            &format!("/v1/tenants/{}/invitations", tenant.id),
            &tenant.key,
            json!({"email": "ann@inviting.test", "role": "analyst"}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let accept = |token: Value, address: &'static str| {
        from(&app, Method::POST, "/v1/invitations/accept", address)
            .json(&json!({"token": token}))
            .send()
    };
    let token = invitation["token"].as_str().unwrap();
    let (prefix, _) = token.rsplit_once('_').unwrap();
    for _ in 0..2 {
        let guess = json!(format!("{prefix}_{}", "0".repeat(43)));
        let response = accept(guess, "198.51.100.3").await.unwrap();
        assert!(response.status().is_client_error(), "{}", response.status());
        assert_ne!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    }
    let events = app.event_count().await;
    let refused = accept(invitation["token"].clone(), "198.51.100.3").await.unwrap();
    assert!(refused.headers().contains_key("retry-after"));
    expect_problem(refused, StatusCode::TOO_MANY_REQUESTS, "rate-limited").await;
    assert_eq!(app.event_count().await, events);
    expect_status(
        accept(invitation["token"].clone(), "198.51.100.4").await.unwrap(),
        StatusCode::CREATED,
    )
    .await;

    // Failed authentication: four refused credentials an hour from one
    // address; then whatever it presents, even a valid key, is refused.
    let path = format!("/v1/tenants/{}", tenant.id);
    let with_key = |key: String, address: &'static str| from(&app, Method::GET, &path, address).bearer_auth(key).send();
    let wrong = format!("{}x", tenant.key);
    for _ in 0..4 {
        expect_problem(
            with_key(wrong.clone(), "198.51.100.5").await.unwrap(),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        )
        .await;
    }
    let blocked = with_key(tenant.key.clone(), "198.51.100.5").await.unwrap();
    assert_eq!(field(&blocked, "ratelimit-policy"), "\"auth-failures\";q=4;w=3600");
    assert!(blocked.headers().contains_key("retry-after"));
    let problem = expect_problem(blocked, StatusCode::TOO_MANY_REQUESTS, "rate-limited").await;
    assert!(problem["detail"].as_str().unwrap().contains("failed authentications"));
    expect_status(
        with_key(tenant.key.clone(), "198.51.100.6").await.unwrap(),
        StatusCode::OK,
    )
    .await;
    // Presenting nothing is not a failed guess: it never blocks an address.
    for _ in 0..6 {
        let response = from(&app, Method::GET, &path, "198.51.100.7").send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    expect_status(
        with_key(tenant.key.clone(), "198.51.100.7").await.unwrap(),
        StatusCode::OK,
    )
    .await;
}
