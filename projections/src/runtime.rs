//! The subscription runtime. Each subscriber reads the log in global order in
//! batches; a batch's read-model writes and the subscriber's checkpoint commit
//! in one transaction, so a crash at any moment neither loses nor doubles an
//! effect. A transaction-scoped advisory lock keeps two processes from running
//! the same subscriber at once.

use crate::event::{StoredEvent, read_batch};
use anyhow::Context;
use async_trait::async_trait;
use sqlx::{PgConnection, PgPool};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// A named consumer of the log that keeps a read model (or an outbox).
#[async_trait]
pub trait Subscriber: Send + Sync {
    /// Stable name: the key of its checkpoint.
    fn name(&self) -> &'static str;
    /// The tables it owns and may be rebuilt from scratch.
    fn tables(&self) -> &'static [&'static str];
    /// Whether a rebuild may recompute it from the log. The digest subscriber
    /// is not: recomputing it would re-sign whatever the log now holds.
    fn rebuildable(&self) -> bool {
        true
    }
    /// Whether commands wait for it (read-your-writes). Every subscriber
    /// says so explicitly: those that feed queries (and workflows whose
    /// effects a client reads right after its command) are awaited; a
    /// publisher or the digests are not.
    fn awaited(&self) -> bool;
    /// Apply one batch inside the caller's transaction. Must be idempotent per
    /// event (replays after a crash roll back with the checkpoint, but a
    /// rebuild may re-run events over rows it already wrote).
    async fn handle(&self, conn: &mut PgConnection, events: &[StoredEvent]) -> anyhow::Result<()>;
}

/// How far each subscriber has got, for read-your-writes waits.
#[derive(Clone)]
pub enum Progress {
    /// Subscribers run in this process: wait on their in-memory positions.
    InProcess(Arc<HashMap<&'static str, watch::Receiver<i64>>>),
    /// Subscribers run elsewhere: poll the checkpoints of these.
    Database(PgPool, Vec<&'static str>),
}

impl Progress {
    /// Wait until every subscriber has processed `position`, or `timeout`
    /// passes; returns whether they all got there.
    pub async fn wait_for(&self, position: i64, timeout: Duration) -> bool {
        if position <= 0 {
            return true;
        }
        let deadline = Instant::now() + timeout;
        match self {
            Self::InProcess(positions) => {
                for receiver in positions.values() {
                    let mut receiver = receiver.clone();
                    let reached = tokio::time::timeout_at(deadline.into(), receiver.wait_for(|p| *p >= position));
                    if !matches!(reached.await, Ok(Ok(_))) {
                        return false;
                    }
                }
                true
            }
            Self::Database(pool, names) => loop {
                let lowest: Option<i64> =
                    sqlx::query_scalar("SELECT min(position) FROM subscriber_checkpoints WHERE name = ANY($1)")
                        .bind(names)
                        .fetch_one(pool)
                        .await
                        .ok()
                        .flatten();
                if lowest.is_some_and(|p| p >= position) {
                    return true;
                }
                if Instant::now() >= deadline {
                    return false;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            },
        }
    }
}

pub struct SubscriptionRuntime {
    pool: PgPool,
    subscribers: Vec<Arc<dyn Subscriber>>,
    batch_size: i64,
    positions: HashMap<&'static str, watch::Sender<i64>>,
}

/// The outcome of one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub events: usize,
    pub position: i64,
}

impl SubscriptionRuntime {
    pub async fn new(pool: PgPool, subscribers: Vec<Arc<dyn Subscriber>>, batch_size: i64) -> anyhow::Result<Self> {
        let mut positions = HashMap::new();
        for subscriber in &subscribers {
            let position = ensure_checkpoint(&pool, subscriber.name()).await?;
            positions.insert(subscriber.name(), watch::channel(position).0);
        }
        Ok(Self {
            pool,
            subscribers,
            batch_size,
            positions,
        })
    }

    /// Progress of the subscribers commands wait for (see [`Subscriber::awaited`]).
    pub fn progress(&self) -> Progress {
        Progress::InProcess(Arc::new(
            self.subscribers
                .iter()
                .filter(|s| s.awaited())
                .map(|s| (s.name(), self.positions[s.name()].subscribe()))
                .collect(),
        ))
    }

    /// Run every subscriber (concurrently) until none has anything left
    /// below the horizon. Returns the number of events processed (summed over
    /// subscribers).
    pub async fn catch_up(&self) -> anyhow::Result<u64> {
        let subscribers: Vec<&dyn Subscriber> = self.subscribers.iter().map(|s| s.as_ref()).collect();
        let on_step = |index: usize, step: Step| {
            if let Some(tx) = self.positions.get(subscribers[index].name()) {
                tx.send_modify(|p| *p = (*p).max(step.position));
            }
        };
        let applied = catch_up_together(&self.pool, &subscribers, self.batch_size, &on_step).await?;
        Ok(applied.into_iter().sum())
    }

    /// Follow the log until `shutdown` turns true. `wake` is bumped by
    /// in-process commits so the next poll happens at once.
    pub async fn run(self, wake: watch::Receiver<u64>, shutdown: watch::Receiver<bool>) {
        let mut tasks = tokio::task::JoinSet::new();
        for subscriber in self.subscribers {
            let position = self.positions[subscriber.name()].clone();
            let (pool, batch) = (self.pool.clone(), self.batch_size);
            let (wake, shutdown) = (wake.clone(), shutdown.clone());
            tasks.spawn(follow(pool, subscriber, batch, position, wake, shutdown));
        }
        while tasks.join_next().await.is_some() {}
    }
}

async fn follow(
    pool: PgPool,
    subscriber: Arc<dyn Subscriber>,
    batch_size: i64,
    position: watch::Sender<i64>,
    mut wake: watch::Receiver<u64>,
    mut shutdown: watch::Receiver<bool>,
) {
    // Poll fast while the log is busy (a commit may be waiting for an older
    // transaction to finish), slowly when it is idle.
    const BUSY: Duration = Duration::from_millis(2);
    const IDLE: Duration = Duration::from_millis(50);
    let mut last_activity = Instant::now();
    let mut failures = 0u32;
    while !*shutdown.borrow() {
        let known = *position.borrow();
        let outcome = match anything_after(&pool, known).await {
            Ok(false) => Ok(Step {
                events: 0,
                position: known,
            }),
            Ok(true) => step(&pool, subscriber.as_ref(), batch_size).await,
            Err(error) => Err(error.into()),
        };
        match outcome {
            Ok(step) if step.events > 0 => {
                failures = 0;
                last_activity = Instant::now();
                position.send_replace(step.position);
                continue;
            }
            Ok(_) => failures = 0,
            Err(error) => {
                failures += 1;
                tracing::error!(subscriber = subscriber.name(), error = %format!("{error:#}"), "subscriber batch failed; retrying");
            }
        }
        let pause = if failures > 0 {
            Duration::from_millis(100 * u64::from(failures.min(50)))
        } else if last_activity.elapsed() < Duration::from_secs(1) {
            BUSY
        } else {
            IDLE
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            changed = wake.changed() => {
                if changed.is_ok() { last_activity = Instant::now(); }
                else { tokio::time::sleep(pause).await; }
            }
            _ = shutdown.changed() => {}
        }
    }
}

/// Catch several subscribers up with reading and writing overlapped. The
/// subscribers whose checkpoints start at the same position share one reader:
/// it prefetches each batch once (outside any transaction: events are
/// immutable and everything below the horizon is final) and hands it to all
/// of them, while each applies the previous one in its own transaction with
/// its checkpoint. That checkpoint must be where the batch was read from; if
/// anyone else moved it, that subscriber stops with an error and nothing of
/// the batch is applied. `on_step` gets the subscriber's index. Returns the
/// events each applied.
pub async fn catch_up_together(
    pool: &PgPool,
    subscribers: &[&dyn Subscriber],
    batch_size: i64,
    on_step: &(dyn Fn(usize, Step) + Send + Sync),
) -> anyhow::Result<Vec<u64>> {
    let mut starts = Vec::with_capacity(subscribers.len());
    for subscriber in subscribers {
        let name = subscriber.name();
        let start: i64 = sqlx::query_scalar("SELECT position FROM subscriber_checkpoints WHERE name = $1")
            .bind(name)
            .fetch_one(pool)
            .await
            .with_context(|| format!("reading the checkpoint of {name}"))?;
        starts.push(start);
    }
    let mut readers = vec![];
    let mut receivers: Vec<Option<Batches>> = subscribers.iter().map(|_| None).collect();
    let mut distinct = starts.clone();
    distinct.sort_unstable();
    distinct.dedup();
    for start in distinct {
        let mut senders = vec![];
        for (index, _) in starts.iter().enumerate().filter(|(_, s)| **s == start) {
            let (sender, receiver) = tokio::sync::mpsc::channel::<(i64, Arc<Vec<StoredEvent>>)>(2);
            senders.push(sender);
            receivers[index] = Some(receiver);
        }
        readers.push(tokio::spawn(read_ahead(pool.clone(), start, batch_size, senders)));
    }
    let appliers = subscribers
        .iter()
        .zip(receivers)
        .enumerate()
        .map(|(index, (subscriber, batches))| {
            let batches = batches.expect("every subscriber has a reader");
            apply_batches(pool, *subscriber, batches, move |step| on_step(index, step))
        });
    let applied = futures::future::try_join_all(appliers).await?;
    for reader in readers {
        reader.await.context("the prefetching reader")??;
    }
    Ok(applied)
}

type Batches = tokio::sync::mpsc::Receiver<(i64, Arc<Vec<StoredEvent>>)>;

/// Reads batches after `start` and sends each to every subscriber still
/// listening; stops at the horizon or when nobody listens.
async fn read_ahead(
    pool: PgPool,
    start: i64,
    batch_size: i64,
    mut senders: Vec<tokio::sync::mpsc::Sender<(i64, Arc<Vec<StoredEvent>>)>>,
) -> anyhow::Result<()> {
    let mut conn = pool.acquire().await?;
    let mut after = start;
    while !senders.is_empty() {
        let batch = read_batch(&mut conn, after, batch_size).await?;
        let Some(last) = batch.last().map(|e| e.position) else {
            return Ok(());
        };
        let batch = Arc::new(batch);
        let mut listening = Vec::with_capacity(senders.len());
        for sender in senders {
            if sender.send((after, batch.clone())).await.is_ok() {
                listening.push(sender);
            }
        }
        senders = listening;
        after = last;
    }
    Ok(())
}

async fn apply_batches(
    pool: &PgPool,
    subscriber: &dyn Subscriber,
    mut batches: Batches,
    on_step: impl Fn(Step),
) -> anyhow::Result<u64> {
    let name = subscriber.name();
    let mut applied = 0u64;
    while let Some((after, events)) = batches.recv().await {
        let mut tx = pool.begin().await?;
        lock_subscriber(&mut tx, name).await?;
        let checkpoint: i64 = sqlx::query_scalar("SELECT position FROM subscriber_checkpoints WHERE name = $1")
            .bind(name)
            .fetch_one(&mut *tx)
            .await?;
        if checkpoint != after {
            anyhow::bail!("{name} moved from {after} to {checkpoint} under a catch-up");
        }
        let last = apply(&mut tx, subscriber, after, &events).await?;
        tx.commit().await?;
        applied += events.len() as u64;
        on_step(Step {
            events: events.len(),
            position: last,
        });
    }
    Ok(applied)
}

/// Apply a batch read after `after` and advance the checkpoint past it, in the
/// caller's transaction; returns the new checkpoint.
async fn apply(
    conn: &mut PgConnection,
    subscriber: &dyn Subscriber,
    after: i64,
    events: &[StoredEvent],
) -> anyhow::Result<i64> {
    let name = subscriber.name();
    let last = events.last().map(|e| e.position).unwrap_or(after);
    subscriber
        .handle(conn, events)
        .await
        .with_context(|| format!("{name} applying events after position {after}"))?;
    sqlx::query(
        "UPDATE subscriber_checkpoints
            SET position = $2, events_processed = events_processed + $3, updated_at = now()
          WHERE name = $1",
    )
    .bind(name)
    .bind(last)
    .bind(events.len() as i64)
    .execute(conn)
    .await?;
    Ok(last)
}

/// Whether anything is readable after `position`: one cheap statement, so
/// an idle poll costs no transaction.
pub async fn anything_after(pool: &PgPool, position: i64) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM events WHERE position > $1 AND position < coverwatch_visible_horizon())",
    )
    .bind(position)
    .fetch_one(pool)
    .await
}

/// Create the subscriber's checkpoint row if missing; returns its position.
pub async fn ensure_checkpoint(pool: &PgPool, name: &str) -> anyhow::Result<i64> {
    sqlx::query("INSERT INTO subscriber_checkpoints (name) VALUES ($1) ON CONFLICT (name) DO NOTHING")
        .bind(name)
        .execute(pool)
        .await
        .context("creating a subscriber checkpoint")?;
    let position = sqlx::query_scalar("SELECT position FROM subscriber_checkpoints WHERE name = $1")
        .bind(name)
        .fetch_one(pool)
        .await?;
    Ok(position)
}

/// Serialize batches of one subscriber across processes. The key includes
/// the schema, so a shadow rebuild (another search_path) runs beside the live
/// subscriber of the same name.
pub async fn lock_subscriber(conn: &mut PgConnection, name: &str) -> sqlx::Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext(current_schema() || '.coverwatch.subscriber.' || $1))")
        .bind(name)
        .execute(conn)
        .await
        .map(|_| ())
}

/// One batch: lock, read after the checkpoint below the horizon, apply,
/// advance the checkpoint, commit.
pub async fn step(pool: &PgPool, subscriber: &dyn Subscriber, batch_size: i64) -> anyhow::Result<Step> {
    let name = subscriber.name();
    let mut tx = pool.begin().await.context("beginning a subscriber batch")?;
    // An advisory lock, not SELECT ... FOR UPDATE: a row lock would give this
    // transaction an xid before it reads, holding back its own horizon.
    lock_subscriber(&mut tx, name).await?;
    let checkpoint: i64 = sqlx::query_scalar("SELECT position FROM subscriber_checkpoints WHERE name = $1")
        .bind(name)
        .fetch_one(&mut *tx)
        .await
        .with_context(|| format!("reading the checkpoint of {name}"))?;
    let events = read_batch(&mut tx, checkpoint, batch_size).await?;
    let Some(last) = events.last() else {
        tx.rollback().await?;
        return Ok(Step {
            events: 0,
            position: checkpoint,
        });
    };
    let last_position = last.position;
    apply(&mut tx, subscriber, checkpoint, &events).await?;
    tx.commit().await.context("committing a subscriber batch")?;
    Ok(Step {
        events: events.len(),
        position: last_position,
    })
}

/// Events behind a checkpoint are counted up to this many (a bounded index
/// range, so a probe or a scrape never scans the log): beyond it the lag is
/// reported as this number.
pub const LAG_COUNT_CAP: i64 = 10_000;

/// One subscriber's checkpoint and how far it lags behind the log.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CheckpointStatus {
    pub name: String,
    pub position: i64,
    pub events_processed: i64,
    /// Events in the log after the checkpoint, counted up to `LAG_COUNT_CAP`.
    pub lag_events: i64,
    /// Age of the oldest of them (0 when caught up).
    pub lag_seconds: f64,
}

/// Every subscriber's checkpoint with its lag, by name: per subscriber one
/// bounded index range and one index lookup, whatever the log's size.
pub async fn checkpoints(pool: &PgPool) -> sqlx::Result<Vec<CheckpointStatus>> {
    sqlx::query_as(
        "SELECT c.name, c.position, c.events_processed,
                (SELECT count(*) FROM (SELECT 1 FROM events e WHERE e.position > c.position LIMIT $1) behind)
                    AS lag_events,
                coalesce(extract(epoch FROM now() - (SELECT e.recorded_at FROM events e
                    WHERE e.position > c.position ORDER BY e.position LIMIT 1))::float8, 0) AS lag_seconds
           FROM subscriber_checkpoints c ORDER BY c.name",
    )
    .bind(LAG_COUNT_CAP)
    .fetch_all(pool)
    .await
}
