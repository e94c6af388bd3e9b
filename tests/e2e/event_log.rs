//! The event log's guarantees: append-only, a global order that never skips,
//! chained hashes, and the metadata every event carries.

use crate::helpers::{ADMIN_TOKEN, expect_status, spawn_app, test_public_key};
use coverwatch_projections::event::read_batch;
use coverwatch_replay::verify::verify_log;
use rand::Rng;
use reqwest::{Method, StatusCode};
use serde_json::json;
use sqlx::{Connection, PgConnection};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use uuid::Uuid;

#[tokio::test]
async fn the_database_refuses_update_delete_and_truncate_on_events() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("immutable").await;
    let mut conn = PgConnection::connect(&app.database_url).await.unwrap();

    // The trigger refuses even the table's owner.
    for statement in [
        "UPDATE events SET payload = '{}'::json",
        "DELETE FROM events",
        "TRUNCATE events",
    ] {
        let error = sqlx::query(statement).execute(&mut conn).await.expect_err(statement);
        assert!(error.to_string().contains("append-only"), "{statement}: {error}");
    }

    // And the application role has no such privilege at all.
    sqlx::query("SET ROLE coverwatch_app").execute(&mut conn).await.unwrap();
    for statement in [
        "UPDATE events SET payload = '{}'::json",
        "DELETE FROM events",
        "TRUNCATE events",
    ] {
        let error = sqlx::query(statement).execute(&mut conn).await.expect_err(statement);
        let code = error.as_database_error().and_then(|e| e.code()).map(|c| c.to_string());
        assert_eq!(code.as_deref(), Some("42501"), "{statement}: {error}");
    }
    // It may still read and append (through the trigger).
    let count: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_type = 'tenant' AND aggregate_id = $1")
            .bind(&tenant.id)
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(count, 2, "TenantCreated and the owner's ApiKeyCreated are untouched");
}

/// Appends `count` events to its own aggregate, one transaction each; some
/// transactions sleep before committing and some roll back. Returns the
/// event ids it committed.
async fn raw_writer(url: String, aggregate: String, count: i64, seed: u64) -> Vec<Uuid> {
    raw_writer_for(url, aggregate, count, seed, Uuid::nil()).await
}

/// `raw_writer`, with the events in `tenant`'s stream.
async fn raw_writer_for(url: String, aggregate: String, count: i64, seed: u64, tenant: Uuid) -> Vec<Uuid> {
    let mut conn = PgConnection::connect(&url).await.unwrap();
    let mut committed = vec![];
    let mut sequence = 0;
    for i in 0..count {
        let (sleep_ms, roll_back) = {
            let mut rng = rand::thread_rng();
            let sleep = if rng.gen_ratio(1, 4) { rng.gen_range(20..250) } else { 0 };
            (sleep, rng.gen_ratio(1, 10))
        };
        let mut tx = conn.begin().await.unwrap();
        let id: Uuid = sqlx::query_scalar(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
             VALUES ('probe', $1, $2, 'Probed', '1.0', json_build_object('i', $3::bigint, 'seed', $4::bigint),
                     json_build_object('tenant_id', $5::text, 'actor', 'system',
                                       'request_id', 'r', 'correlation_id', 'c', 'causation_id', 'c'))
             RETURNING event_id",
        )
        .bind(&aggregate)
        .bind(sequence + 1)
        .bind(i)
        .bind(seed as i64)
        .bind(tenant.to_string())
        .fetch_one(&mut *tx)
        .await
        .unwrap();
        if sleep_ms > 0 {
            // Held open deliberately: a later transaction commits first.
            sqlx::query("SELECT pg_sleep($1)")
                .bind(sleep_ms as f64 / 1000.0)
                .execute(&mut *tx)
                .await
                .unwrap();
        }
        if roll_back {
            tx.rollback().await.unwrap();
        } else {
            tx.commit().await.unwrap();
            sequence += 1;
            committed.push(id);
        }
    }
    committed
}

#[tokio::test]
async fn a_subscriber_sees_every_committed_event_exactly_once_in_a_consistent_order() {
    let app = spawn_app().await;
    let done = Arc::new(AtomicBool::new(false));

    // The subscriber: reads continuously from its own cursor, as the runtime does.
    let reader = {
        let (url, done) = (app.database_url.clone(), done.clone());
        tokio::spawn(async move {
            let mut conn = PgConnection::connect(&url).await.unwrap();
            let mut cursor = 0i64;
            let mut seen = vec![];
            let mut idle_after_done = 0;
            loop {
                let batch = read_batch(&mut conn, cursor, 100).await.unwrap();
                if let Some(last) = batch.last() {
                    cursor = last.position;
                }
                let empty = batch.is_empty();
                seen.extend(batch);
                if empty {
                    if done.load(Ordering::SeqCst) {
                        idle_after_done += 1;
                        if idle_after_done > 50 {
                            return seen;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        })
    };

    // Raw writers with held-open and rolled-back transactions...
    let mut writers = vec![];
    for w in 0..8 {
        writers.push(tokio::spawn(raw_writer(
            app.database_url.clone(),
            format!("probe-{w}"),
            40,
            w,
        )));
    }
    // ...and commands through the API at the same time.
    let tenants: Vec<_> =
        futures::future::join_all((0..4).map(|i| app.create_tenant_owned(format!("order-{i}")))).await;
    let api_writers: Vec<_> = tenants
        .into_iter()
        .map(|tenant| {
            let app = app.clone_client();
            tokio::spawn(async move {
                for n in 0..15 {
                    let response = app
                        .patch(
                            &format!("/v1/tenants/{}", tenant.id),
                            &tenant.key,
                            json!({"name": format!("Renamed {n}")}),
                        )
                        .await;
                    assert_eq!(response.status(), StatusCode::OK);
                }
            })
        })
        .collect();
    let mut committed_raw = HashSet::new();
    for writer in writers {
        committed_raw.extend(writer.await.unwrap());
    }
    for writer in api_writers {
        writer.await.unwrap();
    }
    done.store(true, Ordering::SeqCst);
    let seen = reader.await.unwrap();

    // Exactly once: every committed event, no duplicates, nothing rolled back.
    let all: Vec<(Uuid, i64)> = sqlx::query_as("SELECT event_id, position FROM events")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    let seen_ids: Vec<Uuid> = seen.iter().map(|e| e.event_id).collect();
    let unique: HashSet<Uuid> = seen_ids.iter().copied().collect();
    assert_eq!(unique.len(), seen_ids.len(), "an event was delivered twice");
    let committed: HashSet<Uuid> = all.iter().map(|(id, _)| *id).collect();
    assert_eq!(unique, committed, "delivered events differ from committed events");
    assert!(committed_raw.is_subset(&unique));
    assert!(
        seen.len() > 300,
        "the test wrote too little to mean anything: {}",
        seen.len()
    );

    // Order: strictly increasing positions, and each aggregate's sequence 1, 2, 3...
    assert!(seen.windows(2).all(|w| w[0].position < w[1].position));
    let mut next: HashMap<(String, String), i64> = HashMap::new();
    for event in &seen {
        let expected = next
            .entry((event.aggregate_type.clone(), event.aggregate_id.clone()))
            .or_insert(1);
        assert_eq!(
            event.sequence, *expected,
            "{} {} out of order",
            event.aggregate_type, event.aggregate_id
        );
        *expected += 1;
    }
}

#[tokio::test]
async fn every_event_is_hash_chained_and_verifies_independently() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("chained").await;
    app.add_member(&tenant, "ann@chained.test", "analyst").await;
    let response = app
        .patch(
            &format!("/v1/tenants/{}", tenant.id),
            &tenant.key,
            json!({"industry": "retail"}),
        )
        .await;
    expect_status(response, StatusCode::OK).await;

    let rows: Vec<(i64, String, String)> = sqlx::query_as(
        "SELECT sequence, prev_hash, hash FROM events
              WHERE aggregate_type = 'tenant' AND aggregate_id = $1 ORDER BY sequence",
    )
    .bind(&tenant.id)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 6);
    assert_eq!(rows[0].1, "0".repeat(64));
    for pair in rows.windows(2) {
        assert_eq!(
            pair[1].1, pair[0].2,
            "event {} does not chain to its predecessor",
            pair[1].0
        );
    }
    let report = verify_log(&app.pool, None, Some(test_public_key())).await.unwrap();
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.events, 6 + 2, "and the tenant's Subscription events");

    // A payload altered behind the trigger's back is caught and named.
    let mut conn = PgConnection::connect(&app.database_url).await.unwrap();
    sqlx::query("ALTER TABLE events DISABLE TRIGGER events_refuse_update_delete")
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query("UPDATE events SET payload = replace(payload::text, 'retail', 'retaiL')::json WHERE aggregate_id = $1 AND sequence = 6")
        .bind(&tenant.id)
        .execute(&mut conn)
        .await
        .unwrap();
    let report = verify_log(&app.pool, None, Some(test_public_key())).await.unwrap();
    let divergence = report.divergence.expect("tampering is detected");
    assert_eq!(
        (divergence.aggregate_id.as_str(), divergence.sequence),
        (tenant.id.as_str(), 6)
    );
    assert!(divergence.problem.starts_with("hash mismatch"), "{divergence:?}");
}

#[tokio::test]
async fn every_event_carries_who_where_and_why() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("metadata").await;
    let response = app
        .request(Method::PATCH, &format!("/v1/tenants/{}", tenant.id), Some(&tenant.key))
        .header("x-request-id", "req-123")
        .header("x-correlation-id", "corr-456")
        .header("user-agent", "metadata-test/1.0")
        .json(&json!({"name": "Renamed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "req-123");
    expect_status(response, StatusCode::OK).await;

    let metadata: serde_json::Value = sqlx::query_scalar(
        "SELECT metadata::jsonb FROM events WHERE aggregate_id = $1 AND event_type = 'ProfileUpdated'",
    )
    .bind(&tenant.id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(metadata["tenant_id"], tenant.id.as_str());
    assert_eq!(metadata["actor"], format!("member:{}", tenant.owner_member_id));
    assert!(
        metadata["api_key_id"]
            .as_str()
            .is_some_and(|k| tenant.key.contains(&k.replace('-', "")))
    );
    assert_eq!(metadata["request_id"], "req-123");
    assert_eq!(metadata["correlation_id"], "corr-456");
    assert_eq!(metadata["causation_id"], "req-123");
    assert_eq!(metadata["client_ip"], "127.0.0.1");
    assert_eq!(metadata["user_agent"], "metadata-test/1.0");
    assert!(metadata.get("impersonated_by").is_none());

    // The platform admin acting as a member is recorded as such.
    let response = app
        .request(Method::PATCH, &format!("/v1/tenants/{}", tenant.id), Some(ADMIN_TOKEN))
        .header("x-coverwatch-impersonate", &tenant.owner_member_id)
        .json(&json!({"industry": "support"}))
        .send()
        .await
        .unwrap();
    expect_status(response, StatusCode::OK).await;
    let metadata: serde_json::Value = sqlx::query_scalar(
        "SELECT metadata::jsonb FROM events WHERE aggregate_id = $1 AND event_type = 'ProfileUpdated' ORDER BY sequence DESC LIMIT 1",
    )
    .bind(&tenant.id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(metadata["actor"], format!("member:{}", tenant.owner_member_id));
    assert_eq!(metadata["impersonated_by"], "platform-admin");

    // Every event has a unique id, a time and its tenant.
    let rows: Vec<(Uuid, Option<Uuid>)> = sqlx::query_as("SELECT event_id, tenant_id FROM events")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    let tenants: BTreeMap<Uuid, usize> = rows.iter().fold(BTreeMap::new(), |mut m, (_, t)| {
        *m.entry(t.unwrap()).or_default() += 1;
        m
    });
    assert_eq!(tenants.len(), 1);
}

/// An auditor following `GET .../events?after_position=` live, passing the
/// last position it saw, sees every event of the tenant exactly once, also
/// those whose transactions commit late (held open while later ones commit).
#[tokio::test]
async fn the_auditor_stream_followed_live_sees_late_commits_exactly_once() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("auditor-stream").await;
    let tenant_id: Uuid = tenant.id.parse().unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let follower = {
        let (app, key, done) = (app.clone_client(), tenant.key.clone(), done.clone());
        tokio::spawn(async move {
            let (mut after, mut seen, mut idle_after_done) = (0i64, Vec::<String>::new(), 0);
            loop {
                let page = expect_status(
                    app.get(
                        &format!("/v1/tenants/{tenant_id}/events?after_position={after}&limit=500"),
                        &key,
                    )
                    .await,
                    StatusCode::OK,
                )
                .await;
                let items = page["items"].as_array().unwrap().clone();
                if let Some(last) = items.last() {
                    after = last["position"].as_i64().unwrap();
                }
                seen.extend(items.iter().map(|e| e["event_id"].as_str().unwrap().to_owned()));
                if items.is_empty() {
                    if done.load(Ordering::SeqCst) {
                        idle_after_done += 1;
                        if idle_after_done > 20 {
                            return seen;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        })
    };
    let writers: Vec<_> = (0..6)
        .map(|w| {
            tokio::spawn(raw_writer_for(
                app.database_url.clone(),
                format!("late-{w}"),
                25,
                w,
                tenant_id,
            ))
        })
        .collect();
    let mut committed = HashSet::new();
    for writer in writers {
        committed.extend(writer.await.unwrap().into_iter().map(|id| id.to_string()));
    }
    done.store(true, Ordering::SeqCst);
    let seen = follower.await.unwrap();
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no event twice");
    let missed: Vec<&String> = committed.iter().filter(|id| !unique.contains(id)).collect();
    assert!(missed.is_empty(), "{} late commits skipped: {missed:?}", missed.len());
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE tenant_id = $1")
        .bind(tenant_id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(
        seen.len() as i64,
        total,
        "every event of the tenant, its own commands' included"
    );
}
