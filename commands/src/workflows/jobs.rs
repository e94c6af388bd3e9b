//! Durable jobs on PostgreSQL, with `underway`: a job is a row that a worker
//! takes with `FOR UPDATE SKIP LOCKED` (so several worker processes share
//! the work), keeps alive with heartbeats, and marks done in the same
//! database. A worker that dies leaves its job's heartbeat to go stale; any
//! worker then takes it again (each job is written to be run again safely).
//! A failed job is retried with exponential backoff. A concurrency key keeps
//! one job per account (or organization) at a time.

use jiff::{Span, ToSpan};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::PgPool;
use std::sync::Arc;
use std::time::Duration;
use underway::task::{Error as TaskError, Result as TaskResult, RetryPolicy};
use underway::{Queue, Task, Worker};

/// How jobs run in this process.
#[derive(Debug, Clone)]
pub struct JobSettings {
    /// Jobs one worker process runs at once (per kind).
    pub concurrency: usize,
    /// A job whose worker has not been heard of for this long is taken over.
    pub heartbeat: Duration,
    /// How often idle workers look for work (new jobs also wake them).
    pub poll: Duration,
    /// A job that runs longer is stopped and retried.
    pub timeout: Duration,
}

impl Default for JobSettings {
    fn default() -> Self {
        Self {
            concurrency: 8,
            heartbeat: Duration::from_secs(15),
            poll: Duration::from_secs(5),
            timeout: Duration::from_secs(30 * 60),
        }
    }
}

fn span(duration: Duration) -> Span {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX).milliseconds()
}

/// Five attempts, two seconds apart at first, doubling up to a minute.
fn retry_policy() -> RetryPolicy {
    RetryPolicy::builder()
        .max_attempts(5)
        .initial_interval_ms(2_000)
        .max_interval_ms(60_000)
        .backoff_coefficient(2.0)
        .build()
}

/// What runs one kind of job.
pub trait Runner: Send + Sync + 'static {
    type Input: Serialize + DeserializeOwned + Send + 'static;
    /// Jobs with the same key run one at a time: a second waits for the
    /// first (an advisory lock its transaction holds until it is marked done).
    fn lock_key(input: &Self::Input) -> String;
    fn settings(&self) -> &JobSettings;
    /// Runs one job; an error is retried (with backoff) unless fatal.
    fn run(&self, input: Self::Input) -> impl Future<Output = Result<(), TaskError>> + Send;
}

/// A kind of job, as underway runs it.
pub struct JobTask<R>(pub Arc<R>);

impl<R> Clone for JobTask<R> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<R: Runner> Task for JobTask<R> {
    type Input = R::Input;
    type Output = ();

    async fn execute(&self, mut tx: sqlx::Transaction<'_, sqlx::Postgres>, input: R::Input) -> TaskResult<()> {
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(R::lock_key(&input))
            .execute(&mut *tx)
            .await?;
        self.0.run(input).await?;
        tx.commit().await?;
        Ok(())
    }

    fn retry_policy(&self) -> RetryPolicy {
        retry_policy()
    }

    fn timeout(&self) -> Span {
        span(self.0.settings().timeout)
    }

    fn heartbeat(&self) -> Span {
        span(self.0.settings().heartbeat)
    }
}

/// The queue of one kind of job.
pub async fn queue<T: Task>(pool: &PgPool, name: &str) -> Result<Queue<T>, underway::queue::Error> {
    Queue::builder().name(name).pool(pool.clone()).build().await
}

/// Runs `task`'s jobs from `queue` until `stop` turns true (jobs in hand
/// are finished first).
pub fn spawn_worker<T>(
    queue: Arc<Queue<T>>,
    task: T,
    settings: &JobSettings,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()>
where
    T: Task + Sync,
{
    let mut worker = Worker::new(queue, task);
    worker.set_concurrency_limit(settings.concurrency.max(1));
    let poll = span(settings.poll);
    tokio::spawn(async move {
        let worker = Arc::new(worker);
        let running = {
            let worker = worker.clone();
            tokio::spawn(async move { worker.run_every(poll).await })
        };
        let _ = stop.wait_for(|s| *s).await;
        worker.shutdown();
        if let Ok(Err(error)) = running.await {
            tracing::warn!(error = %error, "a job worker stopped with an error");
        }
    })
}
