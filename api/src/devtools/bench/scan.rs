//! `coverwatch bench-scan`: Coverwatch's side of the scanning benchmark
//! (`make bench-scan`, `tests/tools/bench_scan.py` builds the estate in
//! moto). The real server on a fresh local database, scans run by separate
//! `serve --workers-only` processes as in production: discovery, a first
//! full scan of the organization with one worker, a re-scan with nothing
//! changed, a re-scan with two workers; then the coverage projection and
//! the inventory rebuilt from position 0. Human lines, then one JSON line.

use super::{coverage_position, fresh_database, serve};
use crate::devtools::local_pg::LocalPostgres;
use crate::settings::Settings;
use anyhow::{Context, bail, ensure};
use coverwatch_projections::Subscriber;
use coverwatch_projections::coverage::Coverage;
use coverwatch_projections::inventory::Inventory;
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use sqlx::PgPool;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

const DATABASE: &str = "coverwatch_bench_scan";
const ADMIN_TOKEN: &str = "bench-scan-admin-token-0123456789";

/// What `bench-scan` is told.
pub struct ScanBench {
    pub endpoint: String,
    pub organization_id: String,
    pub management_account_id: String,
    pub requests_per_second: f64,
    pub concurrency: usize,
    pub path_prefix: Option<String>,
    pub rescans: bool,
    pub watch_pids: Vec<u32>,
}

/// CPU seconds (user + system) a process has used, from /proc.
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces): utime is the
    // 14th field, stime the 15th, counted from 1.
    let rest = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// Peak resident memory of a process in MiB (VmHWM).
fn peak_rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

struct Workers {
    children: Vec<tokio::process::Child>,
}

impl Workers {
    fn start(n: usize, url: &str, bench: &ScanBench, settings: &Settings) -> anyhow::Result<Self> {
        let exe = std::env::current_exe()?;
        let mut children = vec![];
        for i in 0..n {
            let mut command = tokio::process::Command::new(&exe);
            command
                .args(["serve", "--workers-only"])
                .env("DATABASE_URL", format!("{url}?application_name=bench-worker-{i}"))
                .env("COVERWATCH_AWS_ENDPOINT_URL", &bench.endpoint)
                .env("COVERWATCH_AWS_ACCESS_KEY_ID", "testing")
                .env("COVERWATCH_AWS_SECRET_ACCESS_KEY", "testing")
                .env(
                    "COVERWATCH_AWS_REQUESTS_PER_SECOND",
                    bench.requests_per_second.to_string(),
                )
                .env("COVERWATCH_JOB_CONCURRENCY", bench.concurrency.to_string())
                .env("COVERWATCH_JOB_POLL_MS", "200")
                .env("COVERWATCH_SCHEDULED_SCANS", "false")
                .env("COVERWATCH_LOCAL_DIR", &settings.local.dir)
                .env("RUST_LOG", "error")
                .stdout(std::process::Stdio::null())
                .kill_on_drop(true);
            if let Some(key) = &settings.audit.signing_key {
                command.env("COVERWATCH_AUDIT_SIGNING_KEY", key.expose_secret());
            }
            children.push(command.spawn().context("starting a worker")?);
        }
        Ok(Self { children })
    }

    fn pids(&self) -> Vec<u32> {
        self.children.iter().filter_map(tokio::process::Child::id).collect()
    }

    async fn stop(mut self) {
        for child in &mut self.children {
            let _ = child.kill().await;
        }
    }
}

struct Http {
    client: reqwest::Client,
    base: String,
}

impl Http {
    async fn send(&self, request: reqwest::RequestBuilder, expect: u16) -> anyhow::Result<(Value, Option<String>)> {
        let response = request.send().await?;
        let status = response.status().as_u16();
        let location = response
            .headers()
            .get("location")
            .and_then(|l| l.to_str().ok())
            .map(str::to_owned);
        let body: Value = response.json().await.unwrap_or(Value::Null);
        ensure!(status == expect, "expected {expect}, got {status}: {body}");
        Ok((body, location))
    }

    async fn post(&self, path: &str, key: &str, body: Value, expect: u16) -> anyhow::Result<(Value, Option<String>)> {
        let request = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(key)
            .json(&body);
        self.send(request, expect).await
    }
}

/// One scan run's figures.
struct RunFigures {
    seconds: f64,
    accounts: i64,
    failed: i64,
    with_errors: i64,
    calls: BTreeMap<String, i64>,
    events: i64,
    observations_in_events: i64,
    coverage_lag_seconds: f64,
}

impl RunFigures {
    fn calls_total(&self) -> i64 {
        self.calls.values().sum()
    }

    fn json(&self) -> Value {
        json!({
            "seconds": self.seconds,
            "accounts": self.accounts,
            "failed": self.failed,
            "accounts_with_errors": self.with_errors,
            "calls": self.calls,
            "calls_total": self.calls_total(),
            "events": self.events,
            "observations_in_events": self.observations_in_events,
            "coverage_lag_seconds": self.coverage_lag_seconds,
        })
    }
}

async fn wait_run(pool: &PgPool, run_id: &str, limit: Duration) -> anyhow::Result<()> {
    let run_id: uuid::Uuid = run_id.parse()?;
    let deadline = Instant::now() + limit;
    loop {
        let status: String = sqlx::query_scalar("SELECT status FROM scan_runs WHERE run_id = $1")
            .bind(run_id)
            .fetch_optional(pool)
            .await?
            .unwrap_or_else(|| "running".into());
        if status != "running" {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "run {run_id} did not finish within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Scans the organization (or its subtree) once and gathers the figures.
async fn scan_once(
    http: &Http,
    pool: &PgPool,
    key: &str,
    org_path: &str,
    path_prefix: Option<&str>,
) -> anyhow::Result<RunFigures> {
    let before: i64 = sqlx::query_scalar("SELECT coalesce(max(position), 0) FROM events")
        .fetch_one(pool)
        .await?;
    let body = path_prefix.map_or_else(|| json!({}), |p| json!({"path_prefix": p}));
    let started = Instant::now();
    let (started_body, _) = http.post(&format!("{org_path}/scan"), key, body, 202).await?;
    let run_id = started_body["run_id"].as_str().context("run id")?.to_owned();
    wait_run(pool, &run_id, Duration::from_secs(6 * 3600)).await?;
    let seconds = started.elapsed().as_secs_f64();
    let run_uuid: uuid::Uuid = run_id.parse()?;
    let (accounts, failed, with_errors): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE status = 'failed'),
                count(*) FILTER (WHERE jsonb_array_length(errors) > 0)
           FROM scan_run_accounts WHERE run_id = $1",
    )
    .bind(run_uuid)
    .fetch_one(pool)
    .await?;
    let calls: Vec<(String, i64)> = sqlx::query_as(
        "SELECT key, sum(value::bigint)::bigint FROM scan_run_accounts, jsonb_each_text(calls)
          WHERE run_id = $1 GROUP BY key ORDER BY key",
    )
    .bind(run_uuid)
    .fetch_all(pool)
    .await?;
    let (events, observations, last): (i64, i64, Option<i64>) = sqlx::query_as(
        "SELECT count(*),
                coalesce(sum(json_array_length(payload->'InventoryChanged'->'found')
                           + json_array_length(payload->'InventoryChanged'->'changed')
                           + json_array_length(payload->'InventoryChanged'->'removed')), 0)::bigint,
                max(position)
           FROM events WHERE position > $1 AND event_type = 'InventoryChanged'",
    )
    .bind(before)
    .fetch_one(pool)
    .await?;
    // How long after the run's last inventory event the coverage read model
    // had it (at most: measured from the event's commit, polled).
    let coverage_lag_seconds = match last {
        None => 0.0,
        Some(last) => {
            while coverage_position(pool).await? < last {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let lag: f64 = sqlx::query_scalar(
                "SELECT extract(epoch FROM clock_timestamp() - recorded_at)::float8 FROM events WHERE position = $1",
            )
            .bind(last)
            .fetch_one(pool)
            .await?;
            lag
        }
    };
    Ok(RunFigures {
        seconds,
        accounts,
        failed,
        with_errors,
        calls: calls.into_iter().collect(),
        events,
        observations_in_events: observations,
        coverage_lag_seconds,
    })
}

fn print_run(label: &str, run: &RunFigures) {
    println!(
        "{label}: {} accounts in {:.1} s ({:.1} accounts/s), {} calls, {} failed, {} with errors; \
         {} InventoryChanged events carrying {} observations; coverage current {:.2} s after the last event",
        run.accounts,
        run.seconds,
        run.accounts as f64 / run.seconds.max(1e-9),
        run.calls_total(),
        run.failed,
        run.with_errors,
        run.events,
        run.observations_in_events,
        run.coverage_lag_seconds,
    );
}

pub async fn run(settings: Settings, bench: ScanBench) -> anyhow::Result<()> {
    let local = LocalPostgres::new(&settings.local.dir, settings.local.port)?;
    let (pool, url) = fresh_database(&local, DATABASE, 16).await?;
    let mut app_settings = settings.clone();
    app_settings.http.bind = "127.0.0.1:0".into();
    app_settings.http.rate_limits = false;
    app_settings.http.admin_token = Some(ADMIN_TOKEN.to_owned().into());
    app_settings.database.url = Some(url.clone());
    app_settings.database.pool_size = 16;
    // The API and the read models in this process; every job in the
    // worker processes started below.
    app_settings.jobs.enabled = false;
    app_settings.jobs.scheduled_scans = false;
    app_settings.aws.endpoint_url = Some(bench.endpoint.clone());
    app_settings.aws.access_key_id = Some("testing".into());
    app_settings.aws.secret_access_key = Some("testing".to_owned().into());
    let (base, stop, server) = serve(app_settings, &pool).await?;
    let http = Http {
        client: reqwest::Client::new(),
        base,
    };
    let url = url.expose_secret().to_owned();

    let (tenant, _) = http
        .send(
            http.client.post(format!("{}/v1/tenants", http.base)).json(&json!({
                "name": "Bench scan", "slug": "bench-scan", "owner_email": "owner@bench.test"})),
            201,
        )
        .await?;
    let tenant_id = tenant["id"].as_str().context("tenant id")?.to_owned();
    let key = tenant["api_key"].as_str().context("api key")?.to_owned();
    http.send(
        http.client
            .put(format!("{}/v1/admin/tenants/{tenant_id}/overrides", http.base))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({"max_accounts": "unlimited", "org_features": true})),
        200,
    )
    .await?;
    let (org, _) = http
        .post(
            &format!("/v1/tenants/{tenant_id}/cloud-organizations"),
            &key,
            json!({"provider": "aws", "organization_id": bench.organization_id,
                   "management_account_id": bench.management_account_id,
                   "role_arn": format!("arn:aws:iam::{}:role/CoverwatchAudit", bench.management_account_id),
                   "name": "Bench"}),
            201,
        )
        .await?;
    let org_path = format!(
        "/v1/tenants/{tenant_id}/cloud-organizations/{}",
        org["id"].as_str().context("organization id")?
    );

    let one = Workers::start(1, &url, &bench, &settings)?;
    let watched: Vec<u32> = bench.watch_pids.clone();
    let cpu = |pids: &[u32]| pids.iter().map(|p| cpu_seconds(*p)).sum::<f64>();

    let started = Instant::now();
    let (discovery, _) = http.post(&format!("{org_path}/discover"), &key, json!({}), 202).await?;
    let run_id = discovery["run_id"].as_str().context("discovery run")?.to_owned();
    loop {
        let (run, _) = http
            .send(
                http.client
                    .get(format!("{}{org_path}/discover/{run_id}", http.base))
                    .bearer_auth(&key),
                200,
            )
            .await?;
        if run["status"] != "running" {
            ensure!(run["status"] == "done", "discovery: {run}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (connected, _) = http
        .post(
            &format!("{org_path}/members/connect"),
            &key,
            json!({"all_active": true}),
            200,
        )
        .await?;
    let connected_count = connected["results"]
        .as_array()
        .map_or(0, |r| r.iter().filter(|r| r["status"] == "connected").count());
    println!(
        "discovered and connected {connected_count} accounts in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let prefix = bench.path_prefix.as_deref();
    let (worker_cpu, moto_cpu) = (cpu(&one.pids()), cpu(&watched));
    let first = scan_once(&http, &pool, &key, &org_path, prefix).await?;
    let first_cpu = (cpu(&one.pids()) - worker_cpu, cpu(&watched) - moto_cpu);
    print_run("first full scan, 1 worker", &first);
    println!(
        "  cpu: worker {:.1} s, watched processes (moto, proxy) {:.1} s",
        first_cpu.0, first_cpu.1
    );
    let peak_one = one.pids().iter().map(|p| peak_rss_mib(*p)).fold(0.0, f64::max);
    let observations: i64 = sqlx::query_scalar("SELECT count(*) FROM inventory_observations")
        .fetch_one(&pool)
        .await?;
    println!("inventory: {observations} observations (findings) in the read model");

    let mut figures = json!({
        "connected": connected_count,
        "first": first.json(),
        "first_cpu": {"worker": first_cpu.0, "watched": first_cpu.1},
        "inventory_observations": observations,
    });
    let mut peak_two = 0.0;
    if bench.rescans {
        let rescan = scan_once(&http, &pool, &key, &org_path, prefix).await?;
        print_run("re-scan, nothing changed, 1 worker", &rescan);
        one.stop().await;
        let two = Workers::start(2, &url, &bench, &settings)?;
        let (worker_cpu, moto_cpu) = (cpu(&two.pids()), cpu(&watched));
        let rescan_two = scan_once(&http, &pool, &key, &org_path, prefix).await?;
        print_run("re-scan, nothing changed, 2 workers", &rescan_two);
        println!(
            "  cpu: workers {:.1} s, watched processes (moto, proxy) {:.1} s",
            cpu(&two.pids()) - worker_cpu,
            cpu(&watched) - moto_cpu
        );
        peak_two = two.pids().iter().map(|p| peak_rss_mib(*p)).fold(0.0, f64::max);
        two.stop().await;
        figures["rescan"] = rescan.json();
        figures["rescan_two_workers"] = rescan_two.json();
    } else {
        one.stop().await;
    }
    println!("worker peak RSS: {peak_one:.0} MiB (1 worker), {peak_two:.0} MiB (largest of 2)");
    figures["worker_peak_rss_mib"] = json!({"one": peak_one, "two": peak_two});

    if bench.rescans {
        let inventory_events: i64 =
            sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'InventoryChanged'")
                .fetch_one(&pool)
                .await?;
        let total: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
            .fetch_one(&pool)
            .await?;
        // Every observation the log's inventory events carry.
        let findings: i64 = sqlx::query_scalar(
            "SELECT coalesce(sum(json_array_length(payload->'InventoryChanged'->'found')
                               + json_array_length(payload->'InventoryChanged'->'changed')
                               + json_array_length(payload->'InventoryChanged'->'removed')), 0)::bigint
               FROM events WHERE event_type = 'InventoryChanged'",
        )
        .fetch_one(&pool)
        .await?;
        for (name, subscriber) in [
            ("coverage", Arc::new(Coverage) as Arc<dyn Subscriber>),
            ("inventory", Arc::new(Inventory) as Arc<dyn Subscriber>),
        ] {
            let summary = coverwatch_replay::rebuild::rebuild(&pool, vec![subscriber], 10_000, &mut |_| {}).await?;
            let per_second = findings as f64 / summary.seconds.max(1e-9);
            println!(
                "{name} rebuilt from position 0: {total} events ({inventory_events} InventoryChanged carrying \
                 {findings} findings) in {:.2} s = {:.0} events/s, {per_second:.0} findings/s \
                 (target >= 20,000/s)",
                summary.seconds, summary.events_per_second
            );
            figures[format!("{name}_rebuild")] = json!({
                "seconds": summary.seconds,
                "events": total,
                "events_per_second": summary.events_per_second,
                "findings_per_second": per_second,
            });
        }
    }

    let _ = stop.send(true);
    match server.await {
        Ok(result) => result?,
        Err(error) => bail!("the server task failed: {error}"),
    }
    println!("{figures}");
    Ok(())
}
