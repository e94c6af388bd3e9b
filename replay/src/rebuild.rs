//! Blue/green rebuilds. The subscribers' tables are recreated empty in a
//! shadow schema; the very same subscriber code runs there from position 0
//! (its connections' `search_path` puts the shadow schema first, so its
//! unqualified table names resolve to the shadow tables) while the live read
//! models keep answering. When the shadow has caught up with the live
//! checkpoint, one transaction swaps the tables and hands the shadow's
//! checkpoint to the live subscriber.

use anyhow::{Context, bail};
use coverwatch_projections::runtime::{Step, Subscriber, catch_up_together, ensure_checkpoint, lock_subscriber};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgConnection, PgPool};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub const SHADOW_SCHEMA: &str = "coverwatch_rebuild";
/// Where the replaced tables wait to be dropped after a switch.
pub const RETIRED_SCHEMA: &str = "coverwatch_retired";

/// Where a rebuild stands, for progress displays.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub events: u64,
    pub total: u64,
    pub position: i64,
    pub elapsed: Duration,
}

impl Progress {
    pub fn rate(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn eta(&self) -> Duration {
        let rate = self.rate();
        if rate <= 0.0 {
            return Duration::ZERO;
        }
        Duration::from_secs_f64(self.total.saturating_sub(self.events) as f64 / rate)
    }
}

/// What a rebuild did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Summary {
    pub subscribers: Vec<String>,
    /// Events read from the log (each applied by every rebuilt subscriber).
    pub events: u64,
    pub seconds: f64,
    pub events_per_second: f64,
}

/// A table whose shadow copy differs from the live one.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TableDifference {
    pub table: String,
    pub only_live: i64,
    pub only_rebuilt: i64,
}

fn rebuildable(subscribers: Vec<Arc<dyn Subscriber>>) -> Vec<Arc<dyn Subscriber>> {
    subscribers.into_iter().filter(|s| s.rebuildable()).collect()
}

/// A pool whose connections see the shadow schema first. Its statements are
/// planned on every execution: the shadow tables grow from empty inside each
/// batch's transaction, and a plan cached while a table was empty (a
/// sequential scan) would otherwise serve it at every size.
async fn shadow_pool(pool: &PgPool) -> anyhow::Result<PgPool> {
    let options: PgConnectOptions = (*pool.connect_options()).clone();
    let options = options.options([
        ("search_path", format!("{SHADOW_SCHEMA},public")),
        ("plan_cache_mode", "force_custom_plan".to_owned()),
    ]);
    PgPoolOptions::new()
        .max_connections(4)
        .connect_with(options)
        .await
        .context("connecting the shadow pool")
}

/// Recreate the shadow schema with empty copies of the subscribers' tables.
async fn prepare_shadow(pool: &PgPool, subscribers: &[Arc<dyn Subscriber>]) -> anyhow::Result<()> {
    let mut tx = pool.begin().await?;
    sqlx::query(&format!("DROP SCHEMA IF EXISTS {SHADOW_SCHEMA} CASCADE"))
        .execute(&mut *tx)
        .await?;
    sqlx::query(&format!("CREATE SCHEMA {SHADOW_SCHEMA}"))
        .execute(&mut *tx)
        .await?;
    // Tables a previous switch retired but could not drop yet.
    sqlx::query(&format!("DROP SCHEMA IF EXISTS {RETIRED_SCHEMA} CASCADE"))
        .execute(&mut *tx)
        .await?;
    sqlx::query(&format!("CREATE SCHEMA {RETIRED_SCHEMA}"))
        .execute(&mut *tx)
        .await?;
    let mut tables = vec!["subscriber_checkpoints"];
    for subscriber in subscribers {
        tables.extend(subscriber.tables());
    }
    for table in tables {
        sqlx::query(&format!(
            "CREATE TABLE {SHADOW_SCHEMA}.{table} (LIKE public.{table} INCLUDING ALL)"
        ))
        .execute(&mut *tx)
        .await
        .with_context(|| format!("creating the shadow of {table}"))?;
    }
    tx.commit().await?;
    Ok(())
}

/// Run the shadow subscribers, concurrently as the live runtime does, until
/// nothing is left below the horizon.
async fn catch_up(
    shadow: &PgPool,
    subscribers: &[Arc<dyn Subscriber>],
    batch_size: i64,
    started: Instant,
    total: u64,
    events: &mut [u64],
    report: &mut dyn FnMut(Progress),
) -> anyhow::Result<()> {
    let applied: Vec<Arc<AtomicU64>> = subscribers.iter().map(|_| Arc::new(AtomicU64::new(0))).collect();
    let position = Arc::new(AtomicI64::new(0));
    // One reader feeds every read model that starts at the same checkpoint.
    let together = {
        let (shadow, subscribers, applied, position) =
            (shadow.clone(), subscribers.to_vec(), applied.clone(), position.clone());
        tokio::spawn(async move {
            let refs: Vec<&dyn Subscriber> = subscribers.iter().map(|s| s.as_ref()).collect();
            let on_step = |index: usize, step: Step| {
                applied[index].fetch_add(step.events as u64, Ordering::Relaxed);
                position.fetch_max(step.position, Ordering::Relaxed);
            };
            catch_up_together(&shadow, &refs, batch_size, &on_step).await
        })
    };
    tokio::pin!(together);
    let progress = |applied: &[Arc<AtomicU64>]| {
        let done: u64 = applied.iter().map(|a| a.load(Ordering::Relaxed)).min().unwrap_or(0);
        Progress {
            events: done,
            total,
            position: position.load(Ordering::Relaxed),
            elapsed: started.elapsed(),
        }
    };
    loop {
        tokio::select! {
            finished = &mut together => {
                finished.context("the catch-up task")??;
                break;
            }
            _ = tokio::time::sleep(Duration::from_millis(500)) => report(progress(&applied)),
        }
    }
    report(progress(&applied));
    for (slot, applied) in events.iter_mut().zip(&applied) {
        *slot += applied.load(Ordering::Relaxed);
    }
    Ok(())
}

async fn checkpoint(conn: &mut PgConnection, schema: &str, name: &str) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(&format!(
        "SELECT coalesce(max(position), 0) FROM {schema}.subscriber_checkpoints WHERE name = $1"
    ))
    .bind(name)
    .fetch_one(conn)
    .await?)
}

/// Build every rebuildable subscriber's read model afresh in the shadow schema
/// and catch it up to (at least) the live checkpoints. Returns the shadow pool.
async fn build_shadow(
    pool: &PgPool,
    subscribers: &[Arc<dyn Subscriber>],
    batch_size: i64,
    report: &mut dyn FnMut(Progress),
) -> anyhow::Result<(PgPool, u64, Instant)> {
    prepare_shadow(pool, subscribers).await?;
    let shadow = shadow_pool(pool).await?;
    for subscriber in subscribers {
        ensure_checkpoint(&shadow, subscriber.name()).await?;
    }
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(pool)
        .await?;
    let started = Instant::now();
    let mut events = vec![0u64; subscribers.len()];
    catch_up(
        &shadow,
        subscribers,
        batch_size,
        started,
        total as u64,
        &mut events,
        report,
    )
    .await?;
    // The shadow tables were filled from empty inside a few transactions:
    // without statistics the planner would keep planning for empty tables
    // once they are live.
    for subscriber in subscribers {
        for table in subscriber.tables() {
            sqlx::query(&format!("ANALYZE {SHADOW_SCHEMA}.{table}"))
                .execute(&shadow)
                .await?;
        }
    }
    let read = events.iter().copied().max().unwrap_or(0);
    Ok((shadow, read, started))
}

/// Rebuild `subscribers` from position 0 and switch over atomically.
pub async fn rebuild(
    pool: &PgPool,
    subscribers: Vec<Arc<dyn Subscriber>>,
    batch_size: i64,
    report: &mut dyn FnMut(Progress),
) -> anyhow::Result<Summary> {
    let subscribers = rebuildable(subscribers);
    if subscribers.is_empty() {
        bail!("nothing to rebuild");
    }
    let (shadow, mut read, started) = build_shadow(pool, &subscribers, batch_size, report).await?;
    // The live subscribers keep moving: catch up and try the switch until the
    // shadow is at or past every live checkpoint at the moment of the switch.
    for _ in 0..1000 {
        let mut events = vec![0u64; subscribers.len()];
        catch_up(
            &shadow,
            &subscribers,
            batch_size,
            started,
            read,
            &mut events,
            &mut |_| {},
        )
        .await?;
        read += events.iter().copied().max().unwrap_or(0);
        if switch(pool, &subscribers).await? {
            shadow.close().await;
            drop_retired(pool).await;
            let seconds = started.elapsed().as_secs_f64();
            return Ok(Summary {
                subscribers: subscribers.iter().map(|s| s.name().to_owned()).collect(),
                events: read,
                seconds,
                events_per_second: read as f64 / seconds.max(1e-9),
            });
        }
    }
    bail!("the rebuild could not catch up with the live subscribers")
}

/// Drop the tables a switch retired, yielding to any query (short lock
/// timeout, a few tries). Left over, they are dropped by the next rebuild.
async fn drop_retired(pool: &PgPool) {
    for _ in 0..20 {
        let dropped = async {
            let mut tx = pool.begin().await?;
            sqlx::query("SET LOCAL lock_timeout = '250ms'")
                .execute(&mut *tx)
                .await?;
            sqlx::query(&format!("DROP SCHEMA IF EXISTS {RETIRED_SCHEMA} CASCADE"))
                .execute(&mut *tx)
                .await?;
            tx.commit().await
        }
        .await;
        match dropped {
            Ok(()) => return,
            Err(error) => tracing::debug!(error = %error, "retired read-model tables still in use; retrying"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Swap shadow and live tables if the shadow is caught up; false otherwise.
async fn switch(pool: &PgPool, subscribers: &[Arc<dyn Subscriber>]) -> anyhow::Result<bool> {
    let mut tx = pool.begin().await?;
    for subscriber in subscribers {
        // Hold the live subscriber still (and the shadow one, for symmetry).
        lock_subscriber(&mut tx, subscriber.name()).await?;
        let live = checkpoint(&mut tx, "public", subscriber.name()).await?;
        let rebuilt = checkpoint(&mut tx, SHADOW_SCHEMA, subscriber.name()).await?;
        if rebuilt < live {
            tx.rollback().await?;
            return Ok(false);
        }
    }
    for subscriber in subscribers {
        for table in subscriber.tables() {
            // Move the old table aside rather than drop it here: DROP locks
            // each index and the row type too, which can deadlock with a query
            // planned a moment before; the retired tables go after the commit.
            sqlx::query(&format!("ALTER TABLE public.{table} SET SCHEMA {RETIRED_SCHEMA}"))
                .execute(&mut *tx)
                .await?;
            sqlx::query(&format!("ALTER TABLE {SHADOW_SCHEMA}.{table} SET SCHEMA public"))
                .execute(&mut *tx)
                .await?;
            sqlx::query(&format!(
                "GRANT SELECT, INSERT, UPDATE, DELETE ON public.{table} TO coverwatch_app"
            ))
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(&format!(
            "INSERT INTO public.subscriber_checkpoints (name, position, events_processed, updated_at)
             SELECT name, position, events_processed, now() FROM {SHADOW_SCHEMA}.subscriber_checkpoints WHERE name = $1
             ON CONFLICT (name) DO UPDATE
                SET position = EXCLUDED.position, events_processed = EXCLUDED.events_processed, updated_at = now()"
        ))
        .bind(subscriber.name())
        .execute(&mut *tx)
        .await?;
    }
    sqlx::query(&format!("DROP SCHEMA {SHADOW_SCHEMA} CASCADE"))
        .execute(&mut *tx)
        .await?;
    tx.commit().await.context("switching to the rebuilt read models")?;
    Ok(true)
}

/// Rebuild into the shadow schema without switching and compare it, row for
/// row, with the live read models at the same position. The shadow is dropped.
pub async fn compare(
    pool: &PgPool,
    subscribers: Vec<Arc<dyn Subscriber>>,
    batch_size: i64,
) -> anyhow::Result<Vec<TableDifference>> {
    let subscribers = rebuildable(subscribers);
    let (shadow, _, started) = build_shadow(pool, &subscribers, batch_size, &mut |_| {}).await?;
    for _ in 0..1000 {
        let mut events = vec![0u64; subscribers.len()];
        catch_up(&shadow, &subscribers, batch_size, started, 0, &mut events, &mut |_| {}).await?;
        let mut tx = pool.begin().await?;
        let mut aligned = true;
        for subscriber in &subscribers {
            lock_subscriber(&mut tx, subscriber.name()).await?;
            let live = checkpoint(&mut tx, "public", subscriber.name()).await?;
            let rebuilt = checkpoint(&mut tx, SHADOW_SCHEMA, subscriber.name()).await?;
            aligned &= live == rebuilt;
        }
        if !aligned {
            // The live side is behind or ahead: let it move, then look again.
            tx.rollback().await?;
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        let mut differences = vec![];
        for subscriber in &subscribers {
            for table in subscriber.tables() {
                let (only_live, only_rebuilt): (i64, i64) = sqlx::query_as(&format!(
                    "SELECT (SELECT count(*) FROM (SELECT * FROM public.{table} EXCEPT ALL SELECT * FROM {SHADOW_SCHEMA}.{table}) a),
                            (SELECT count(*) FROM (SELECT * FROM {SHADOW_SCHEMA}.{table} EXCEPT ALL SELECT * FROM public.{table}) b)"
                ))
                .fetch_one(&mut *tx)
                .await?;
                if only_live != 0 || only_rebuilt != 0 {
                    differences.push(TableDifference {
                        table: table.to_string(),
                        only_live,
                        only_rebuilt,
                    });
                }
            }
        }
        sqlx::query(&format!("DROP SCHEMA {SHADOW_SCHEMA} CASCADE"))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        shadow.close().await;
        return Ok(differences);
    }
    bail!("the live read models never stood still long enough to compare")
}
