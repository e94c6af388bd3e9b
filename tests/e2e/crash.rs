//! Crash safety of the subscription runtime: the subscribers run in a real
//! `coverwatch serve --subscribers-only` process that is SIGKILLed at random
//! moments while commands keep arriving; afterwards every read model equals a
//! rebuild from position 0, and every event was applied exactly once.

use crate::helpers::{expect_status, spawn_app_with};
use coverwatch_domain::clock::SystemClock;
use coverwatch_projections::read_models;
use rand::Rng;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// With subscribers down, a just-issued key is not yet known to the
/// directory read model: retry until it is (bounded).
async fn until_authorized<F, Fut>(mut send: F) -> reqwest::Response
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = reqwest::Response>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let response = send().await;
        if response.status() != StatusCode::UNAUTHORIZED {
            return response;
        }
        assert!(Instant::now() < deadline, "a key stayed unknown for 60 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn coverwatch_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let binary = exe.parent().unwrap().parent().unwrap().join("coverwatch");
    assert!(
        binary.exists(),
        "{} is missing: build it first (make test does)",
        binary.display()
    );
    binary
}

fn start_subscribers(database_url: &str) -> tokio::process::Child {
    tokio::process::Command::new(coverwatch_binary())
        .args(["serve", "--subscribers-only"])
        .env("DATABASE_URL", crate::helpers::serving_url(database_url))
        .env("COVERWATCH_DATABASE_OWNER_URL", database_url)
        // Small batches: more commits, more moments to be killed in between.
        .env("COVERWATCH_SUBSCRIBER_BATCH_SIZE", "7")
        .env("COVERWATCH_AUDIT_SIGNING_KEY", crate::helpers::SIGNING_KEY)
        .env("COVERWATCH_DIGEST_CHECKPOINT_EVERY", "5")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

async fn snapshot(pool: &PgPool) -> Value {
    let mut tables = serde_json::Map::new();
    for subscriber in read_models() {
        for table in subscriber.tables() {
            let rows: Value = sqlx::query_scalar(&format!(
                "SELECT coalesce(jsonb_agg(to_jsonb(t) ORDER BY to_jsonb(t)::text), '[]'::jsonb) FROM {table} t"
            ))
            .fetch_one(pool)
            .await
            .unwrap();
            tables.insert(table.to_string(), rows);
        }
    }
    Value::Object(tables)
}

async fn caught_up(pool: &PgPool) -> bool {
    let behind: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM subscriber_checkpoints c
          WHERE c.position < (SELECT coalesce(max(position), 0) FROM events)",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    let subscribers: i64 = sqlx::query_scalar("SELECT count(*) FROM subscriber_checkpoints")
        .fetch_one(pool)
        .await
        .unwrap();
    // The read models, the digests and the two workflows that subscribe
    // (derived detections, usage thresholds).
    behind == 0 && subscribers == read_models().len() as i64 + 3
}

#[tokio::test]
async fn killing_subscribers_at_any_moment_leaves_read_models_equal_to_a_rebuild() {
    // The API runs here without subscribers (and without waiting for them).
    let app = spawn_app_with(Arc::new(SystemClock), |s| {
        s.subscribers.enabled = false;
        s.http.consistency_wait_ms = 0;
        // The load comes from one address, signing up as fast as it can and
        // retrying keys the read models do not know yet: not what the
        // per-address limits are for.
        s.http.signups_per_hour = u32::MAX;
        s.http.invitation_accepts_per_hour = u32::MAX;
        s.http.auth_failures_per_hour = u32::MAX;
    })
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let tenants = Arc::new(Mutex::new(vec![]));

    // Load: sign-ups, invitations, acceptances and profile changes, concurrently.
    let mut load = vec![];
    for worker in 0..4 {
        let (app, stop, tenants) = (app.clone_client(), stop.clone(), tenants.clone());
        load.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let tenant = app.create_tenant(&format!("crash-{worker}-{n}")).await;
                let base = format!("/v1/tenants/{}", tenant.id);
                let invitations = format!("{base}/invitations");
                let body = json!({"email": format!("m{n}@crash.test"), "role": "analyst"});
                let invited = until_authorized(|| app.post(&invitations, &tenant.key, body.clone())).await;
                let invitation = expect_status(invited, StatusCode::CREATED).await;
                let accepted = app.accept_invitation(&invitation["token"]).await;
                assert_eq!(accepted.status(), StatusCode::CREATED);
                for i in 0..3 {
                    let body = json!({"name": format!("Renamed {i}")});
                    let response = until_authorized(|| app.patch(&base, &tenant.key, body.clone())).await;
                    // Committed either way: read back (200) when the read
                    // models already show it, else 202 (nothing waits here).
                    assert!(
                        [StatusCode::OK, StatusCode::ACCEPTED].contains(&response.status()),
                        "{}",
                        response.status()
                    );
                }
                tenants.lock().unwrap().push(tenant);
            }
        }));
    }

    // Kill the subscriber process at random moments, several times.
    let database_url = app.database_url.clone();
    let mut kills = 0;
    let mut kills_while_behind = 0;
    for _ in 0..8 {
        let mut child = start_subscribers(&database_url);
        let alive = rand::thread_rng().gen_range(150..700);
        tokio::time::sleep(Duration::from_millis(alive)).await;
        if !caught_up(&app.pool).await {
            kills_while_behind += 1;
        }
        child.start_kill().unwrap(); // SIGKILL
        child.wait().await.unwrap();
        kills += 1;
    }
    assert!(
        kills_while_behind >= 2,
        "the kills should land while there is work: {kills_while_behind}"
    );
    // A last run catches up while the load winds down.
    let mut child = start_subscribers(&database_url);
    stop.store(true, Ordering::SeqCst);
    for worker in load {
        worker.await.unwrap();
    }
    assert_eq!(kills, 8);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !caught_up(&app.pool).await {
        assert!(Instant::now() < deadline, "subscribers did not catch up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.start_kill().unwrap();
    child.wait().await.unwrap();

    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(total > 100, "too little load to mean anything: {total}");
    let processed: Vec<(String, i64)> = sqlx::query_as("SELECT name, events_processed FROM subscriber_checkpoints")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    for (name, count) in processed {
        assert_eq!(count, total, "{name} applied {count} events for {total} in the log");
    }
    let audit_rows: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_log")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(audit_rows, total);

    // The signed digests cover every event exactly once too.
    let report = coverwatch_replay::verify::verify_log(&app.pool, None, Some(crate::helpers::test_public_key()))
        .await
        .unwrap();
    assert!(report.ok(), "{report:?}");
    assert!(report.checkpoints > 0);

    let live = snapshot(&app.pool).await;
    coverwatch_replay::rebuild::rebuild(&app.pool, read_models(), 500, &mut |_| {})
        .await
        .unwrap();
    let rebuilt = snapshot(&app.pool).await;
    assert_eq!(live, rebuilt, "the read models after crashes differ from a rebuild");
    assert!(tenants.lock().unwrap().len() >= 4);
}
