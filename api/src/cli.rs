//! The `coverwatch` command line: serve, migrate, the local database, replay
//! and the benchmark.

use crate::devtools::local_pg::LocalPostgres;
use crate::settings::Settings;
use crate::startup::{Application, connect, database_urls, prepare_database};
use crate::telemetry;
use anyhow::bail;
use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};
use coverwatch_domain::ids::TenantId;
use coverwatch_projections::read_models;
use coverwatch_replay::{bundle, rebuild, state, verify};
use std::io::Write;
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "coverwatch", version, about = "Cloud detection coverage, event-sourced")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Apply migrations, then serve the API, run the log subscribers and the
    /// job workers (scans, discoveries).
    Serve {
        /// Serve the API only; subscribers and job workers run elsewhere.
        #[arg(long, conflicts_with_all = ["subscribers_only", "workers_only"])]
        api_only: bool,
        /// Run the log subscribers only, no HTTP, no jobs.
        #[arg(long, conflicts_with = "workers_only")]
        subscribers_only: bool,
        /// Run the job workers only: add one such process per unit of
        /// scanning throughput wanted.
        #[arg(long)]
        workers_only: bool,
    },
    /// Apply the database migrations and exit.
    Migrate,
    /// The local PostgreSQL cluster under .coverwatch/ (the embedded default).
    Db {
        #[command(subcommand)]
        action: DbAction,
    },
    /// Auditor tools over the event log.
    Replay {
        #[command(subcommand)]
        action: ReplayAction,
    },
    /// Measure Kafka publishing: latency at a paced load, and backlog drain.
    BenchKafka(KafkaBench),
    /// The coverage projection at scale: build, one organization detection,
    /// organization coverage query latency.
    BenchCoverage {
        #[arg(long, default_value_t = 1_000)]
        accounts: usize,
        #[arg(long, default_value_t = 10_000)]
        detections: usize,
        #[arg(long, default_value_t = 500)]
        queries: usize,
    },
    /// Time one full AWS discovery against an endpoint (JSON; see
    /// `make bench-discovery`).
    BenchDiscovery {
        /// The AWS endpoint (moto).
        #[arg(long)]
        endpoint: String,
        /// The organization's id (`o-...`).
        #[arg(long)]
        organization_id: String,
        /// Pace per AWS operation; 0 lets the server be the bottleneck.
        #[arg(long, default_value_t = 0.0)]
        requests_per_second: f64,
    },
    /// Scan an organization with worker processes: first scan, re-scans
    /// with one and two workers, coverage rebuild (see `make bench-scan`).
    BenchScan(ScanBenchArgs),
    /// Measure command throughput against raw inserts, and catch-up speed.
    Bench {
        #[arg(long, default_value_t = 32)]
        clients: usize,
        #[arg(long, default_value_t = 15)]
        seconds: u64,
        /// Synthetic events added to the log before timing catch-up.
        #[arg(long, default_value_t = 300_000)]
        catch_up_events: i64,
    },
}

#[derive(clap::Args)]
struct ScanBenchArgs {
    /// The AWS endpoint (the fault proxy in front of moto).
    #[arg(long)]
    endpoint: String,
    /// The organization's id (`o-...`).
    #[arg(long)]
    organization_id: String,
    #[arg(long, default_value = "123456789012")]
    management_account_id: String,
    /// Pace per account, region and AWS operation; 0: unpaced.
    #[arg(long, default_value_t = 0.0)]
    requests_per_second: f64,
    /// Accounts each worker process scans at once.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Scan this subtree only (e.g. `Root/ou-00`).
    #[arg(long)]
    path_prefix: Option<String>,
    /// Only the first scan: no re-scans, no rebuilds (a quicker look).
    #[arg(long)]
    first_scan_only: bool,
    /// Processes whose CPU time is reported beside the workers' (moto, the proxy).
    #[arg(long)]
    watch_pid: Vec<u32>,
}

#[derive(clap::Args)]
struct KafkaBench {
    /// A Kafka-protocol broker (`make broker` starts one on 127.0.0.1:19092).
    #[arg(long, default_value = "127.0.0.1:19092")]
    brokers: String,
    /// Events per second appended through the API (sign-ups: 2 events each).
    #[arg(long, default_value_t = 1_000)]
    rate: u64,
    #[arg(long, default_value_t = 15)]
    seconds: u64,
    /// Events in the backlog whose publishing is timed.
    #[arg(long, default_value_t = 100_000)]
    backlog: i64,
}

#[derive(Subcommand)]
enum DbAction {
    /// Create (first time) and start the cluster; print its URL.
    Up,
    /// Stop the cluster.
    Stop,
}

#[derive(Subcommand)]
enum ReplayAction {
    /// Verify the history (hash chains, signed digests, aggregate heads) or an
    /// audit bundle offline; non-zero exit on any divergence.
    Verify {
        #[arg(long, conflicts_with = "bundle")]
        tenant: Option<TenantId>,
        /// An audit bundle from `replay export`: verified without a database.
        #[arg(long)]
        bundle: Option<PathBuf>,
        /// The published audit public key (hex); default: the configured key.
        #[arg(long)]
        public_key: Option<String>,
    },
    /// Rebuild read models from position 0 into new tables and switch over
    /// atomically (queries keep working meanwhile).
    Rebuild {
        /// One read model (`directory`, `audit_trail`); default all.
        #[arg(long, conflicts_with = "all")]
        projection: Option<String>,
        #[arg(long)]
        all: bool,
        /// Build beside the live tables and compare row for row; no switch.
        #[arg(long)]
        check: bool,
    },
    /// A tenant (or one aggregate) as it was at an instant.
    State {
        #[arg(long)]
        tenant: TenantId,
        /// RFC 3339; default now.
        #[arg(long)]
        as_of: Option<DateTime<Utc>>,
        /// `tenant/<id>`: only that aggregate's own state.
        #[arg(long)]
        aggregate: Option<String>,
    },
    /// Write a tenant's signed audit bundle.
    Export {
        #[arg(long)]
        tenant: TenantId,
        #[arg(long)]
        from: Option<DateTime<Utc>>,
        #[arg(long)]
        to: Option<DateTime<Utc>>,
        #[arg(long)]
        out: PathBuf,
    },
    /// Measure rebuild and verify speed over a synthetic log.
    Bench {
        #[arg(long, default_value_t = 1_000_000)]
        events: i64,
    },
}

pub async fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut settings = Settings::load()?;
    telemetry::init(&settings.log.format);
    match cli.command {
        Command::Serve {
            api_only,
            subscribers_only,
            workers_only,
        } => {
            settings.subscribers.enabled = !api_only && !workers_only;
            settings.http.enabled = !subscribers_only && !workers_only;
            settings.jobs.enabled &= !api_only && !subscribers_only;
            let app = Application::build(settings.clone()).await?;
            if settings.http.enabled {
                tracing::info!(bind = %settings.http.bind, port = app.port(), "coverwatch is serving");
            }
            app.run_until_stopped().await
        }
        Command::Migrate => {
            prepare_database(&settings).await?;
            println!("migrations applied");
            Ok(())
        }
        Command::Db { action } => {
            let local = LocalPostgres::new(&settings.local.dir, settings.local.port)?;
            match action {
                DbAction::Up => println!("{}", local.ensure_running().await?),
                DbAction::Stop => local.stop()?,
            }
            Ok(())
        }
        Command::Replay { action } => replay(settings, action).await,
        Command::Bench {
            clients,
            seconds,
            catch_up_events,
        } => crate::devtools::bench::run(settings, clients, seconds, catch_up_events).await,
        Command::BenchCoverage {
            accounts,
            detections,
            queries,
        } => crate::devtools::bench::coverage::run(settings, accounts, detections, queries).await,
        Command::BenchDiscovery {
            endpoint,
            organization_id,
            requests_per_second,
        } => crate::devtools::bench::discovery::run(&endpoint, &organization_id, requests_per_second).await,
        Command::BenchScan(args) => {
            let bench = crate::devtools::bench::scan::ScanBench {
                endpoint: args.endpoint,
                organization_id: args.organization_id,
                management_account_id: args.management_account_id,
                requests_per_second: args.requests_per_second,
                concurrency: args.concurrency,
                path_prefix: args.path_prefix,
                rescans: !args.first_scan_only,
                watch_pids: args.watch_pid,
            };
            crate::devtools::bench::scan::run(settings, bench).await
        }
        Command::BenchKafka(args) => {
            crate::devtools::bench::kafka(settings, &args.brokers, args.rate, args.seconds, args.backlog).await
        }
    }
}

async fn replay(settings: Settings, action: ReplayAction) -> anyhow::Result<()> {
    if let ReplayAction::Verify {
        bundle: Some(path),
        public_key,
        ..
    } = &action
    {
        let key = match public_key {
            Some(key) => Some(key.clone()),
            None if settings.audit.signing_key.is_some() => Some(settings.audit_signer()?.public_key_hex()),
            None => None,
        };
        let report = bundle::verify_bundle(path, key.as_deref())?;
        return print_report(&report);
    }
    if let ReplayAction::Bench { events } = action {
        return crate::devtools::bench::replay(settings, events).await;
    }
    let serving = prepare_database(&settings).await?;
    // A rebuild swaps tables (DDL): the owner's work, not the server's.
    let url = match action {
        ReplayAction::Rebuild { .. } => database_urls(&settings).await?.owner,
        _ => serving,
    };
    let pool = connect(&url, 6).await?;
    match action {
        ReplayAction::Verify { tenant, public_key, .. } => {
            let key = match public_key {
                Some(key) => key,
                None => settings.audit_signer()?.public_key_hex(),
            };
            print_report(&verify::verify_log(&pool, tenant, Some(key)).await?)
        }
        ReplayAction::Rebuild { projection, check, .. } => {
            let subscribers: Vec<_> = read_models()
                .into_iter()
                .filter(|s| projection.as_deref().is_none_or(|p| p == s.name()))
                .collect();
            if subscribers.is_empty() {
                bail!("no read model named {}", projection.unwrap_or_default());
            }
            if check {
                let differences = rebuild::compare(&pool, subscribers, settings.subscribers.batch_size).await?;
                println!("{}", serde_json::to_string_pretty(&differences)?);
                if !differences.is_empty() {
                    bail!("the rebuilt read models differ from the live ones");
                }
                println!("rebuilt read models equal the live ones");
                return Ok(());
            }
            let summary = rebuild::rebuild(&pool, subscribers, settings.subscribers.batch_size, &mut |p| {
                eprint!(
                    "\r{} / {} events  {:>9.0} events/s  position {}  ETA {:>5.1}s   ",
                    p.events,
                    p.total,
                    p.rate(),
                    p.position,
                    p.eta().as_secs_f64()
                );
                let _ = std::io::stderr().flush();
            })
            .await?;
            eprintln!();
            println!(
                "rebuilt {} from {} events in {:.2}s ({:.0} events/s) and switched over",
                summary.subscribers.join(", "),
                summary.events,
                summary.seconds,
                summary.events_per_second
            );
            Ok(())
        }
        ReplayAction::State {
            tenant,
            as_of,
            aggregate,
        } => {
            let as_of = as_of.unwrap_or_else(Utc::now);
            let reconstructed = state::tenant_as_of(&pool, tenant, as_of).await?;
            let Some(reconstructed) = reconstructed else {
                bail!("tenant {tenant} did not exist at {as_of}");
            };
            match aggregate.as_deref() {
                None => println!("{}", serde_json::to_string_pretty(&reconstructed)?),
                Some(a) if a == format!("tenant/{tenant}") => {
                    println!("{}", serde_json::to_string_pretty(&reconstructed.aggregate)?)
                }
                Some(other) => bail!("unknown aggregate {other}: this tenant's aggregates are tenant/{tenant}"),
            }
            Ok(())
        }
        ReplayAction::Export { tenant, from, to, out } => {
            let manifest = bundle::export(&pool, &settings.audit_signer()?, tenant, from, to, &out).await?;
            println!(
                "wrote {} ({} events, signed by {})",
                out.display(),
                manifest.events,
                manifest.public_key
            );
            Ok(())
        }
        ReplayAction::Bench { .. } => unreachable!("handled above"),
    }
}

fn print_report(report: &verify::Report) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(report)?);
    if !report.ok() {
        bail!("the history diverges");
    }
    println!(
        "OK: {} events, {} aggregates, {} signed checkpoints",
        report.events, report.aggregates, report.checkpoints
    );
    Ok(())
}
