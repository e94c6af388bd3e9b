//! `coverwatch bench`: the foundation's speed figures, printed, never asserted
//! (`discovery`, `scan`: the AWS discovery and scanning benchmarks' Rust sides).
//!
//! 1. Command throughput: the real server on the local PostgreSQL, driven over
//!    HTTP by N concurrent clients, each updating its own tenant's profile
//!    (every command loads the aggregate, appends through the hashing trigger
//!    and waits until the read models show it).
//! 2. The raw baseline: pgbench on the same cluster, N clients, a single-row
//!    INSERT + COMMIT of the same event row (same payload and metadata).
//! 3. Catch-up: synthetic events are appended, the read models emptied, and
//!    the subscription runtime timed from position 0.

pub mod coverage;
pub mod discovery;
pub mod scan;

use crate::devtools::local_pg::LocalPostgres;
use crate::settings::Settings;
use crate::startup::{Application, connect, migrate};
use anyhow::{Context, bail};
use coverwatch_projections::read_models;
use secrecy::SecretString;
use serde_json::{Value, json};
use sqlx::PgPool;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const DATABASE: &str = "coverwatch_bench";

/// A new, migrated database `name` on the local cluster (dropped first).
pub(super) async fn fresh_database(
    local: &LocalPostgres,
    name: &str,
    pool_size: u32,
) -> anyhow::Result<(PgPool, SecretString)> {
    local.ensure_running().await?;
    let admin = PgPool::connect(&local.url("postgres")).await?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&admin)
        .await?;
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&admin).await?;
    admin.close().await;
    let url: SecretString = local.url(name).into();
    let pool = connect(&url, pool_size).await?;
    migrate(&pool).await?;
    Ok((pool, url))
}

/// Where the coverage read model's checkpoint is.
pub(super) async fn coverage_position(pool: &PgPool) -> anyhow::Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT position FROM subscriber_checkpoints WHERE name = 'coverage'")
            .fetch_optional(pool)
            .await?
            .unwrap_or(0),
    )
}

type Server = tokio::task::JoinHandle<anyhow::Result<()>>;

/// The real server on `pool`, on a free port: its base URL, its stop
/// switch and its task.
async fn serve(
    settings: Settings,
    pool: &PgPool,
) -> anyhow::Result<(String, tokio::sync::watch::Sender<bool>, Server)> {
    let app = Application::build_with(settings, pool.clone(), Arc::new(coverwatch_domain::clock::SystemClock)).await?;
    let base = format!("http://127.0.0.1:{}", app.port());
    let stop = app.shutdown_handle();
    Ok((base, stop, tokio::spawn(app.run_until_stopped())))
}

pub async fn run(settings: Settings, clients: usize, seconds: u64, catch_up_events: i64) -> anyhow::Result<()> {
    let local = LocalPostgres::new(&settings.local.dir, settings.local.port)?;
    let (pool, url) = fresh_database(&local, DATABASE, clients as u32 + 8).await?;

    let mut app_settings = settings.clone();
    app_settings.http.bind = "127.0.0.1:0".into();
    // The benchmark measures the command path (requests are still metered);
    // the plans' per-tenant rate limits would cap it at 60 requests a minute.
    app_settings.http.rate_limits = false;
    app_settings.database.url = Some(url.clone());
    app_settings.database.pool_size = clients as u32 + 8;
    let (base, stop, server) = serve(app_settings, &pool).await?;

    let http = reqwest::Client::new();
    let mut tenants = vec![];
    for i in 0..clients {
        let response: Value = http
            .post(format!("{base}/v1/tenants"))
            .json(&json!({"name": format!("Bench {i}"), "slug": format!("bench-{i}"), "owner_email": format!("owner{i}@bench.test")}))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let id = response["id"].as_str().context("tenant id")?.to_owned();
        let key = response["api_key"].as_str().context("api key")?.to_owned();
        tenants.push((id, key));
    }

    println!("== command throughput: {clients} clients x {seconds}s, PATCH /v1/tenants/{{id}} over HTTP");
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let mut tasks = tokio::task::JoinSet::new();
    for (id, key) in tenants.clone() {
        let (http, base, ok, failed) = (http.clone(), base.clone(), ok.clone(), failed.clone());
        tasks.spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                n += 1;
                let sent = http
                    .patch(format!("{base}/v1/tenants/{id}"))
                    .bearer_auth(&key)
                    .json(&json!({"name": format!("Bench tenant {n}")}))
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status().is_success() => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let elapsed = started.elapsed().as_secs_f64();
    let commands = ok.load(Ordering::Relaxed) as f64 / elapsed;
    println!(
        "commands: {} ok, {} failed in {elapsed:.1}s = {commands:.0} commands/s",
        ok.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed)
    );

    println!("== raw baseline: pgbench, {clients} clients x {seconds}s, single-row INSERT + COMMIT of an event row");
    let (payload, metadata): (String, String) = sqlx::query_as(
        "SELECT payload::text, metadata::text FROM events WHERE event_type = 'ProfileUpdated' ORDER BY position DESC LIMIT 1",
    )
    .fetch_one(&pool)
    .await?;
    sqlx::query(
        "CREATE TABLE bench_raw (aggregate_type text, aggregate_id text, sequence bigint, event_type text,
                                 event_version text, payload json, metadata json)",
    )
    .execute(&pool)
    .await?;
    let quote = |s: &str| s.replace('\'', "''");
    let script = std::env::temp_dir().join(format!("coverwatch-bench-{}.sql", std::process::id()));
    std::fs::write(
        &script,
        format!(
            "INSERT INTO bench_raw VALUES ('tenant', '{}', :client_id, 'ProfileUpdated', '1.0', '{}', '{}');\n",
            uuid::Uuid::nil(),
            quote(&payload),
            quote(&metadata)
        ),
    )?;
    let pgbench = local.bin_dir()?.join("pgbench");
    let output = tokio::process::Command::new(&pgbench)
        .args([
            "-n",
            "-c",
            &clients.to_string(),
            "-j",
            "2",
            "-T",
            &seconds.to_string(),
            "-f",
        ])
        .arg(&script)
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &settings.local.port.to_string(),
            "-U",
            "coverwatch",
            DATABASE,
        ])
        .output()
        .await
        .context("running pgbench")?;
    let _ = std::fs::remove_file(&script);
    let text = String::from_utf8_lossy(&output.stdout);
    let Some(raw) = text
        .lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| l["tps = ".len()..].split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok())
    else {
        bail!("pgbench gave no tps: {text}{}", String::from_utf8_lossy(&output.stderr));
    };
    println!("raw inserts: {raw:.0} tx/s");
    println!("RATIO commands / raw inserts = {:.2} (target >= 0.60)", commands / raw);

    let _ = stop.send(true);
    let _ = server.await;

    println!("== catch-up: subscription runtime from position 0");
    let per_tenant = (catch_up_events / clients as i64).max(1);
    let inserted = sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         SELECT 'tenant', t.aggregate_id, t.last + g, 'ProfileUpdated', '1.0',
                json_build_object('ProfileUpdated', json_build_object('name', 'Synthetic ' || g,
                    'industry', NULL, 'company_size', NULL, 'contact_email', NULL, 'billing_email', NULL)),
                json_build_object('tenant_id', t.aggregate_id, 'actor', 'system', 'request_id', 'bench',
                    'correlation_id', 'bench', 'causation_id', 'bench')
           FROM (SELECT aggregate_id, max(sequence) AS last FROM events
                  WHERE aggregate_type = 'tenant' GROUP BY aggregate_id) t,
                generate_series(1, $1) g
          ORDER BY g, t.aggregate_id",
    )
    .bind(per_tenant)
    .execute(&pool)
    .await?
    .rows_affected();
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&pool)
        .await?;
    println!("appended {inserted} synthetic events; the log holds {total}");
    sqlx::query("VACUUM ANALYZE events").execute(&pool).await?;
    // This machine is noisy (2 cores): three runs, each printed, and the median.
    let mut rates = vec![];
    for run in 1..=3 {
        let summary =
            coverwatch_replay::rebuild::rebuild(&pool, read_models(), settings.subscribers.batch_size, &mut |_| {})
                .await?;
        println!(
            "catch-up run {run}: {} events through {} in {:.2}s = {:.0} events/s",
            summary.events,
            summary.subscribers.join(" + "),
            summary.seconds,
            summary.events_per_second
        );
        rates.push(summary.events_per_second);
    }
    rates.sort_by(f64::total_cmp);
    println!("catch-up: median {:.0} events/s (target >= 50000)", rates[1]);
    pool.close().await;
    Ok(())
}

/// `coverwatch replay bench`: rebuild and verify speed over a synthetic log of
/// `events` events (1,000 tenants), next to the raw rate of reading the events
/// table sequentially with COPY in the same run.
pub async fn replay(settings: Settings, events: i64) -> anyhow::Result<()> {
    let local = LocalPostgres::new(&settings.local.dir, settings.local.port)?;
    let (pool, _) = fresh_database(&local, "coverwatch_bench_replay", 8).await?;
    let signer = settings.audit_signer()?;

    println!("== generating {events} events over 1000 tenants");
    let started = Instant::now();
    let tenants = 1000i64.min(events);
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         SELECT 'tenant', id::text, 1, 'TenantCreated', '1.0',
                json_build_object('TenantCreated', json_build_object('tenant_id', id, 'name', 'Tenant ' || n,
                    'slug', 'tenant-' || n, 'owner_member_id', id, 'owner_email', 'owner' || n || '@bench.test',
                    'industry', NULL, 'company_size', NULL, 'contact_email', NULL, 'billing_email', NULL,
                    'parent_tenant_id', NULL, 'hierarchy_path', json_build_array())),
                json_build_object('tenant_id', id, 'actor', 'system', 'request_id', 'bench',
                    'correlation_id', 'bench', 'causation_id', 'bench')
           FROM (SELECT n, gen_random_uuid() AS id FROM generate_series(1, $1) n) t ORDER BY n",
    )
    .bind(tenants)
    .execute(&pool)
    .await?;
    let mut remaining = events - tenants;
    let mut sequence = 1i64;
    while remaining > 0 {
        let rounds = (remaining / tenants).clamp(1, 100);
        sqlx::query(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
             SELECT 'tenant', t.aggregate_id, $1 + g, 'ProfileUpdated', '1.0',
                    json_build_object('ProfileUpdated', json_build_object('name', 'Renamed ' || g)),
                    json_build_object('tenant_id', t.aggregate_id, 'actor', 'system', 'request_id', 'bench',
                        'correlation_id', 'bench', 'causation_id', 'bench')
               FROM (SELECT aggregate_id FROM events WHERE sequence = 1 ORDER BY aggregate_id LIMIT $3) t,
                    generate_series(1, $2) g
              ORDER BY g, t.aggregate_id",
        )
        .bind(sequence)
        .bind(rounds)
        .bind(remaining.min(tenants))
        .execute(&pool)
        .await?;
        sequence += rounds;
        remaining -= rounds * remaining.min(tenants);
    }
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&pool)
        .await?;
    println!("generated {total} events in {:.1}s", started.elapsed().as_secs_f64());

    // The digests (signed checkpoints) as a live system would have them.
    let runtime = coverwatch_projections::SubscriptionRuntime::new(
        pool.clone(),
        coverwatch_projections::all_subscribers(settings.digests(signer.clone())),
        settings.subscribers.batch_size,
    )
    .await?;
    let started = Instant::now();
    runtime.catch_up().await?;
    println!(
        "live catch-up of every subscriber: {:.1}s",
        started.elapsed().as_secs_f64()
    );
    sqlx::query("VACUUM ANALYZE events").execute(&pool).await?;

    println!("== raw sequential read: COPY (SELECT * FROM events ORDER BY position) TO STDOUT");
    let mut conn = pool.acquire().await?;
    let started = Instant::now();
    let mut stream = conn
        .copy_out_raw("COPY (SELECT * FROM events ORDER BY position) TO STDOUT")
        .await?;
    let mut bytes = 0usize;
    while let Some(chunk) = futures::TryStreamExt::try_next(&mut stream).await? {
        bytes += chunk.len();
    }
    drop(stream);
    drop(conn);
    let raw = total as f64 / started.elapsed().as_secs_f64();
    println!(
        "raw read: {total} events ({} MB) at {raw:.0} events/s",
        bytes / 1_000_000
    );

    println!("== rebuild of all read models (blue/green)");
    let summary =
        coverwatch_replay::rebuild::rebuild(&pool, read_models(), settings.subscribers.batch_size, &mut |_| {}).await?;
    println!(
        "rebuild: {} events in {:.1}s = {:.0} events/s; RATIO rebuild / raw read = {:.2} (targets >= 0.5 and >= 50000 events/s)",
        summary.events,
        summary.seconds,
        summary.events_per_second,
        summary.events_per_second / raw
    );

    println!("== verify");
    let started = Instant::now();
    let report = coverwatch_replay::verify::verify_log(&pool, None, Some(signer.public_key_hex())).await?;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "verify: {} events, {} checkpoints, ok = {} in {seconds:.1}s = {:.0} events/s (target >= 100000)",
        report.events,
        report.checkpoints,
        report.ok(),
        report.events as f64 / seconds
    );
    pool.close().await;
    Ok(())
}

/// `coverwatch bench-kafka`: commit-to-acknowledgement latency of the Kafka
/// publisher at a paced load through the API, then the rate at which it
/// drains a backlog.
pub async fn kafka(settings: Settings, brokers: &str, rate: u64, seconds: u64, backlog: i64) -> anyhow::Result<()> {
    let local = LocalPostgres::new(&settings.local.dir, settings.local.port)?;
    let (pool, url) = fresh_database(&local, "coverwatch_bench_kafka", 40).await?;
    let prefix = format!("bench{}", std::process::id());

    let mut app_settings = settings.clone();
    app_settings.http.bind = "127.0.0.1:0".into();
    // The benchmark measures the command path (requests are still metered);
    // the plans' per-tenant rate limits would cap it at 60 requests a minute.
    app_settings.http.rate_limits = false;
    app_settings.database.url = Some(url.clone());
    app_settings.database.pool_size = 40;
    app_settings.kafka.brokers = Some(brokers.to_owned());
    app_settings.kafka.topic_prefix = prefix.clone();
    let app = Application::build_with(
        app_settings.clone(),
        pool.clone(),
        Arc::new(coverwatch_domain::clock::SystemClock),
    )
    .await?;
    let metrics = app.publisher_metrics().context("the publisher runs in process")?;
    let base = format!("http://127.0.0.1:{}", app.port());
    let stop = app.shutdown_handle();
    let server = tokio::spawn(app.run_until_stopped());

    println!("== {rate} events/s through the API for {seconds}s (sign-ups: 2 events each), published to {brokers}");
    let http = reqwest::Client::new();
    // This machine is noisy (2 cores shared by server, database and broker):
    // three rounds, each printed, and the median.
    let mut p99s = vec![];
    for round in 1..=3u64 {
        metrics.ack_latencies_us.lock().expect("latency lock").clear();
        let interval = Duration::from_secs_f64(2.0 / rate as f64);
        let started = Instant::now();
        let before: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
            .fetch_one(&pool)
            .await?;
        let failed = Arc::new(AtomicU64::new(0));
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut tasks = tokio::task::JoinSet::new();
        let mut n = 0u64;
        while started.elapsed() < Duration::from_secs(seconds) {
            ticker.tick().await;
            n += 1;
            let (http, base, failed) = (http.clone(), base.clone(), failed.clone());
            tasks.spawn(async move {
                let sent = http
                    .post(format!("{base}/v1/tenants"))
                    .json(
                        &json!({"name": format!("Kafka {round} {n}"), "slug": format!("kafka-{round}-{n}"),
                                  "owner_email": format!("o{n}@kafka.test")}),
                    )
                    .send()
                    .await;
                if !sent.is_ok_and(|r| r.status().is_success()) {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        while tasks.join_next().await.is_some() {}
        let elapsed = started.elapsed().as_secs_f64();
        let appended = sqlx::query_scalar::<_, i64>("SELECT count(*) FROM events")
            .fetch_one(&pool)
            .await?
            - before;
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let published: Option<i64> =
                sqlx::query_scalar("SELECT position FROM subscriber_checkpoints WHERE name = 'kafka_publisher'")
                    .fetch_optional(&pool)
                    .await?;
            let last: Option<i64> = sqlx::query_scalar("SELECT max(position) FROM events")
                .fetch_one(&pool)
                .await?;
            if published >= last || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let p99 = metrics.latency_quantile_ms(0.99).unwrap_or(f64::NAN);
        println!(
            "round {round}: appended {appended} events in {elapsed:.1}s = {:.0} events/s ({} failed requests); \
             commit-to-acknowledged p50 {:.1} ms, p99 {p99:.1} ms",
            appended as f64 / elapsed,
            failed.load(Ordering::Relaxed),
            metrics.latency_quantile_ms(0.5).unwrap_or(f64::NAN),
        );
        p99s.push(p99);
    }
    p99s.sort_by(f64::total_cmp);
    println!(
        "commit-to-acknowledged latency: median p99 {:.1} ms (target p99 < 100 ms)",
        p99s[1]
    );
    let _ = stop.send(true);
    let _ = server.await;

    println!("== backlog of {backlog} events published from the checkpoint");
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         SELECT 'detection', 'backlog-' || (g % 1000), g / 1000 + 1, 'BacklogProbe', '1.0',
                json_build_object('g', g, 'note', 'a detection-sized payload for the backlog benchmark'),
                json_build_object('tenant_id', '00000000-0000-0000-0000-000000000001', 'actor', 'system',
                                  'request_id', 'bench', 'correlation_id', 'bench', 'causation_id', 'bench')
           FROM generate_series(0, $1 - 1) g ORDER BY g",
    )
    .bind(backlog)
    .execute(&pool)
    .await?;
    let publisher = Arc::new(coverwatch_projections::kafka::KafkaPublisher::new(
        app_settings.kafka()?.context("kafka settings")?,
    )?);
    let runtime = coverwatch_projections::SubscriptionRuntime::new(pool.clone(), vec![publisher], 10_000).await?;
    let started = Instant::now();
    let published = runtime.catch_up().await?;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "backlog: {published} events published and acknowledged in {seconds:.2}s = {:.0} events/s (target >= 20000)",
        published as f64 / seconds
    );
    pool.close().await;
    Ok(())
}
