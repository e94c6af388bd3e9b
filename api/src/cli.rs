//! The `coverwatch` command line: serve, migrate, the local database, replay
//! and the benchmark.

use crate::local_pg::LocalPostgres;
use crate::settings::Settings;
use crate::startup::{Application, connect, database_url, migrate};
use crate::telemetry;
use anyhow::bail;
use clap::{Parser, Subcommand};
use coverwatch_projections::all_subscribers;
use uuid::Uuid;

#[derive(Parser)]
#[command(name = "coverwatch", version, about = "Cloud detection coverage, event-sourced")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Apply migrations, then serve the API and run the log subscribers.
    Serve {
        /// Serve the API only; subscribers run in another process.
        #[arg(long, conflicts_with = "subscribers_only")]
        api_only: bool,
        /// Run the log subscribers only, no HTTP.
        #[arg(long)]
        subscribers_only: bool,
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

#[derive(Subcommand)]
enum DbAction {
    /// Create (first time) and start the cluster; print its URL.
    Up,
    /// Stop the cluster.
    Stop,
}

#[derive(Subcommand)]
enum ReplayAction {
    /// Recompute every hash chain; non-zero exit on the first divergence.
    Verify {
        #[arg(long)]
        tenant: Option<Uuid>,
    },
    /// Rebuild every read model from position 0.
    Rebuild,
}

pub async fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut settings = Settings::load()?;
    telemetry::init(&settings.log_format);
    match cli.command {
        Command::Serve {
            api_only,
            subscribers_only,
        } => {
            settings.subscribers = !api_only;
            settings.api = !subscribers_only;
            let app = Application::build(settings.clone()).await?;
            if settings.api {
                tracing::info!(bind = %settings.bind, port = app.port(), "coverwatch is serving");
            }
            app.run_until_stopped().await
        }
        Command::Migrate => {
            let pool = connect(&database_url(&settings).await?, 2).await?;
            migrate(&pool).await?;
            println!("migrations applied");
            Ok(())
        }
        Command::Db { action } => {
            let local = LocalPostgres::new(&settings.local_dir, settings.local_port)?;
            match action {
                DbAction::Up => println!("{}", local.ensure_running().await?),
                DbAction::Stop => local.stop()?,
            }
            Ok(())
        }
        Command::Replay { action } => {
            let pool = connect(&database_url(&settings).await?, 4).await?;
            migrate(&pool).await?;
            match action {
                ReplayAction::Verify { tenant } => {
                    let report = coverwatch_replay::verify::verify_chains(&pool, tenant).await?;
                    println!("{}", serde_json::to_string_pretty(&report)?);
                    if !report.ok() {
                        bail!("the history diverges");
                    }
                    Ok(())
                }
                ReplayAction::Rebuild => {
                    let started = std::time::Instant::now();
                    let events =
                        coverwatch_replay::rebuild::rebuild(&pool, all_subscribers(), settings.subscriber_batch_size)
                            .await?;
                    println!("rebuilt: {events} event applications in {:.2?}", started.elapsed());
                    Ok(())
                }
            }
        }
        Command::Bench {
            clients,
            seconds,
            catch_up_events,
        } => crate::bench::run(settings, clients, seconds, catch_up_events).await,
    }
}
