//! `Idempotency-Key`: a retried POST returns the first result and appends nothing.

use crate::helpers::{ADMIN_TOKEN, SIGNING_KEY, TestApp, expect_problem, expect_status, spawn_app, spawn_app_on};
use coverwatch_domain::clock::SystemClock;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A random UUID (version 4): what an anonymous request's key must be.
const SIGNUP_KEY: &str = "6f1c2a9e-8d4b-4c7e-9a35-2b8f0e1d7c64";

#[tokio::test]
async fn a_retry_with_the_same_key_returns_the_first_result_and_appends_nothing() {
    let app = spawn_app().await;
    let sign_up = || {
        app.request(Method::POST, "/v1/tenants", None)
            .header("idempotency-key", SIGNUP_KEY)
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
    assert!(!rows[0].0.contains(SIGNUP_KEY));
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
        .header("idempotency-key", SIGNUP_KEY)
        .json(&json!({"name": "Other", "slug": "other", "owner_email": "o@other.test"}))
        .send()
        .await
        .unwrap();
    expect_problem(other, StatusCode::UNPROCESSABLE_ENTITY, "rule-violated").await;
    // One MemberInvited, and the admin's override.
    assert_eq!(app.event_count().await, events + 2);
}

fn sign_up_body(slug: &str) -> Value {
    json!({"name": slug, "slug": slug, "owner_email": format!("owner@{slug}.test")})
}

fn sign_up_request(app: &TestApp, key: &str, slug: &str) -> reqwest::RequestBuilder {
    app.request(Method::POST, "/v1/tenants", None)
        .header("idempotency-key", key)
        .json(&sign_up_body(slug))
}

/// Without credentials, only an unguessable key may have a response (which
/// holds the new owner's API key) replayed: anything but a random UUID is
/// refused, and nothing is written.
#[tokio::test]
async fn an_anonymous_request_needs_a_random_uuid_as_its_key() {
    let app = spawn_app().await;
    let events = app.event_count().await;
    for key in [
        "signup-acme-1",
        "0192d4e2-3f4a-7b8c-9d0e-1f2a3b4c5d6e", /* a UUIDv7 */
    ] {
        let response = sign_up_request(&app, key, "acme").send().await.unwrap();
        let problem = expect_problem(response, StatusCode::UNPROCESSABLE_ENTITY, "validation").await;
        assert_eq!(problem["errors"][0]["field"], "Idempotency-Key", "{problem}");
    }
    assert_eq!(app.event_count().await, events);
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM idempotency_keys")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(stored, 0);
    let key = uuid::Uuid::new_v4().to_string();
    expect_status(
        sign_up_request(&app, &key, "acme").send().await.unwrap(),
        StatusCode::CREATED,
    )
    .await;
}

/// Expired keys go in the upkeep loop (through an index), not on every
/// request.
#[tokio::test]
async fn expired_keys_are_purged_by_the_upkeep_loop_not_by_requests() {
    let app =
        crate::helpers::spawn_app_with(Arc::new(SystemClock), |s| s.subscribers.settle_interval_ms = 60_000).await;
    sqlx::query(
        "INSERT INTO idempotency_keys (scope, key_hash, fingerprint, created_at)
         VALUES ('anonymous', 'old', 'f', now() - interval '25 hours')",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let key = uuid::Uuid::new_v4().to_string();
    expect_status(
        sign_up_request(&app, &key, "fresh").send().await.unwrap(),
        StatusCode::CREATED,
    )
    .await;
    let count = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM idempotency_keys WHERE key_hash = 'old'")
            .fetch_one(&app.pool)
            .await
            .unwrap()
    };
    assert_eq!(count().await, 1, "a request does not purge");
    app.stop.send(true).unwrap();
    let upkeep = crate::helpers::spawn_app_on(app.database_url.clone(), Arc::new(SystemClock), |s| {
        s.subscribers.settle_interval_ms = 100;
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while count().await > 0 {
        assert!(Instant::now() < deadline, "the expired key was never purged");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(upkeep);
}

/// An API process of its own (the real binary), to be killed mid-request.
/// Nothing runs the subscribers, so a request waits for the read models
/// (up to a minute) after its commit: a window to kill it in.
async fn doomed_api(database_url: &str) -> (tokio::process::Child, String) {
    let port = crate::helpers::free_port();
    let child = tokio::process::Command::new(crate::crash::coverwatch_binary())
        .args(["serve", "--api-only"])
        .env(
            "DATABASE_URL",
            format!(
                "{}?application_name=doomed-api",
                crate::helpers::serving_url(database_url)
            ),
        )
        .env("COVERWATCH_DATABASE_OWNER_URL", database_url)
        .env("COVERWATCH_BIND", format!("127.0.0.1:{port}"))
        .env("COVERWATCH_AUDIT_SIGNING_KEY", SIGNING_KEY)
        .env("COVERWATCH_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("COVERWATCH_CONSISTENCY_WAIT_MS", "60000")
        .env("COVERWATCH_IDEMPOTENCY_LEASE_SECS", "1")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let address = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while reqwest::get(format!("{address}/healthz")).await.is_err() {
        assert!(Instant::now() < deadline, "the API process did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (child, address)
}

/// A sign-up sent to `address`, answered (or not) in the background.
fn sign_up_in_flight(
    address: &str,
    key: &str,
    slug: &str,
) -> tokio::task::JoinHandle<reqwest::Result<reqwest::Response>> {
    let request = reqwest::Client::new()
        .post(format!("{address}/v1/tenants"))
        .header("idempotency-key", key)
        .json(&sign_up_body(slug));
    tokio::spawn(request.send())
}

async fn count(app: &TestApp, sql: &str, bind: &str) -> i64 {
    sqlx::query_scalar(sql).bind(bind).fetch_one(&app.pool).await.unwrap()
}

/// Retries the sign-up until the key is free (the dead attempt's lease
/// passes) and returns the answer.
async fn retry_until_completed(app: &TestApp, key: &str, slug: &str) -> reqwest::Response {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let response = sign_up_request(app, key, slug).send().await.unwrap();
        if response.status() != StatusCode::CONFLICT {
            return response;
        }
        assert!(response.headers().contains_key("retry-after"));
        assert!(Instant::now() < deadline, "the key stayed in progress");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The answer completes the sign-up: one tenant, one subscription, the
/// owner's key works, and a further retry replays the same answer.
async fn completed_exactly_once(app: &TestApp, key: &str, slug: &str, answer: reqwest::Response) -> Value {
    let body = expect_status(answer, StatusCode::CREATED).await;
    let tenant_id = body["id"].as_str().unwrap().to_owned();
    let created =
        "SELECT count(*) FROM events WHERE event_type = 'TenantCreated' AND payload::text LIKE '%' || $1 || '%'";
    assert_eq!(count(app, created, slug).await, 1, "one TenantCreated for {slug}");
    let subscribed = "SELECT count(*) FROM events WHERE event_type = 'SubscriptionCreated' AND aggregate_id = $1";
    assert_eq!(count(app, subscribed, &tenant_id).await, 1, "one subscription");
    let of_tenant =
        "SELECT aggregate_id FROM events WHERE event_type = 'TenantCreated' AND payload::text LIKE '%' || $1 || '%'";
    let logged: String = sqlx::query_scalar(of_tenant)
        .bind(slug)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(logged, tenant_id, "the answer names the tenant the log holds");
    expect_status(
        app.get(&format!("/v1/tenants/{tenant_id}"), body["api_key"].as_str().unwrap())
            .await,
        StatusCode::OK,
    )
    .await;
    let replayed = sign_up_request(app, key, slug).send().await.unwrap();
    assert_eq!(replayed.headers()["idempotent-replayed"], "true");
    assert_eq!(expect_status(replayed, StatusCode::CREATED).await, body);
    body
}

/// The process dies after the sign-up committed its tenant and before it
/// answered (or created the subscription): the retry finds the tenant in
/// the log, does not create it again, creates the subscription, and
/// answers with the same tenant and a working owner key.
#[tokio::test]
async fn a_request_killed_after_its_commit_is_completed_by_the_retry_never_run_twice() {
    let database_url = crate::helpers::fresh_database().await;
    let (mut doomed, address) = doomed_api(&database_url).await;
    let key = uuid::Uuid::new_v4().to_string();
    let in_flight = sign_up_in_flight(&address, &key, "cut-short");
    let pool = sqlx::PgPool::connect(&database_url).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let created: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'TenantCreated'")
            .fetch_one(&pool)
            .await
            .unwrap();
        if created == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "the sign-up never committed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    doomed.start_kill().unwrap(); // SIGKILL, mid-request
    doomed.wait().await.unwrap();
    assert!(in_flight.await.unwrap().is_err(), "the client got no answer");

    let app = spawn_app_on(database_url, Arc::new(SystemClock), |_| {}).await;
    let answer = retry_until_completed(&app, &key, "cut-short").await;
    completed_exactly_once(&app, &key, "cut-short", answer).await;
}

/// The process dies while its commit waits (the log is locked): nothing
/// was committed, so the retry runs the sign-up, once.
#[tokio::test]
async fn a_request_killed_before_its_commit_is_run_by_the_retry_once() {
    let database_url = crate::helpers::fresh_database().await;
    let (mut doomed, address) = doomed_api(&database_url).await;
    let pool = sqlx::PgPool::connect(&database_url).await.unwrap();
    let mut lock = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE events IN SHARE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    let key = uuid::Uuid::new_v4().to_string();
    let in_flight = sign_up_in_flight(&address, &key, "cut-early");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
              WHERE application_name = 'doomed-api' AND wait_event_type = 'Lock' AND query ILIKE '%insert into events%'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        if waiting == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "the sign-up never reached its commit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    doomed.start_kill().unwrap();
    doomed.wait().await.unwrap();
    assert!(in_flight.await.unwrap().is_err());
    // The dead process's sessions go with it (PostgreSQL would notice at
    // its next read; this does not wait for that).
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'doomed-api'")
        .execute(&pool)
        .await
        .unwrap();
    lock.rollback().await.unwrap();
    let created: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'TenantCreated'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(created, 0, "nothing was committed");

    let app = spawn_app_on(database_url, Arc::new(SystemClock), |_| {}).await;
    let answer = retry_until_completed(&app, &key, "cut-early").await;
    completed_exactly_once(&app, &key, "cut-early", answer).await;
}

/// A follow-up step fails after the first commit (the database refuses the
/// subscription's event): the answer is 500 and not kept; retries do not
/// create the tenant again, and once the fault is gone a retry completes
/// the sign-up with the same answer the first would have given.
#[tokio::test]
async fn a_server_error_after_a_commit_is_completed_by_a_retry_not_repeated() {
    let app = spawn_app().await;
    sqlx::raw_sql(
        "CREATE FUNCTION injected_fault() RETURNS trigger LANGUAGE plpgsql AS
           $$ BEGIN RAISE EXCEPTION 'injected fault'; END $$;
         CREATE TRIGGER injected_fault BEFORE INSERT ON events FOR EACH ROW
           WHEN (NEW.event_type = 'SubscriptionCreated') EXECUTE FUNCTION injected_fault();",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let key = uuid::Uuid::new_v4().to_string();
    for _ in 0..2 {
        let failed = sign_up_request(&app, &key, "faulty").send().await.unwrap();
        expect_problem(failed, StatusCode::INTERNAL_SERVER_ERROR, "internal").await;
    }
    let created =
        "SELECT count(*) FROM events WHERE event_type = 'TenantCreated' AND payload::text LIKE '%' || $1 || '%'";
    assert_eq!(count(&app, created, "faulty").await, 1, "the tenant, once");
    sqlx::raw_sql("DROP TRIGGER injected_fault ON events")
        .execute(&app.pool)
        .await
        .unwrap();
    let answer = sign_up_request(&app, &key, "faulty").send().await.unwrap();
    assert!(
        answer.headers().get("idempotent-replayed").is_none(),
        "a 500 is never replayed"
    );
    completed_exactly_once(&app, &key, "faulty", answer).await;
}
