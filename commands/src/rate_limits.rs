//! The rate limits' counters, in PostgreSQL so that a limit holds across
//! every API process: one row per limited thing, a fixed window that starts
//! at its first hit, counted by one upsert per request.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use std::time::Duration;

/// A bucket's window after a hit (or as it stands).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Hits in the window, this one included (refused ones too).
    pub hits: u32,
    pub resets_at: DateTime<Utc>,
}

fn window_of((hits, resets_at): (i32, DateTime<Utc>)) -> Window {
    Window {
        hits: u32::try_from(hits).unwrap_or(0),
        resets_at,
    }
}

/// Counts one hit in `bucket`: a window that has ended starts again at `now`.
pub async fn hit(pool: &PgPool, bucket: &str, window: Duration, now: DateTime<Utc>) -> sqlx::Result<Window> {
    let resets_at = now + chrono::Duration::from_std(window).unwrap_or(chrono::Duration::MAX);
    sqlx::query_as::<_, (i32, DateTime<Utc>)>(
        "INSERT INTO rate_limit_counters AS c (bucket, window_start, resets_at, hits)
         VALUES ($1, $2, $3, 1)
         ON CONFLICT (bucket) DO UPDATE SET
             window_start = CASE WHEN c.resets_at <= $2 THEN $2 ELSE c.window_start END,
             resets_at    = CASE WHEN c.resets_at <= $2 THEN $3 ELSE c.resets_at END,
             hits         = CASE WHEN c.resets_at <= $2 THEN 1 ELSE least(c.hits, 2147483646) + 1 END
         RETURNING hits, resets_at",
    )
    .bind(bucket)
    .bind(now)
    .bind(resets_at)
    .fetch_one(pool)
    .await
    .map(window_of)
}

/// The bucket's current window without counting, if it has one.
pub async fn peek(pool: &PgPool, bucket: &str, now: DateTime<Utc>) -> sqlx::Result<Option<Window>> {
    sqlx::query_as::<_, (i32, DateTime<Utc>)>(
        "SELECT hits, resets_at FROM rate_limit_counters WHERE bucket = $1 AND resets_at > $2",
    )
    .bind(bucket)
    .bind(now)
    .fetch_optional(pool)
    .await
    .map(|row| row.map(window_of))
}

/// Forgets every window that has ended (the upkeep loop calls it).
pub async fn prune(pool: &PgPool, now: DateTime<Utc>) -> sqlx::Result<u64> {
    sqlx::query("DELETE FROM rate_limit_counters WHERE resets_at <= $1")
        .bind(now)
        .execute(pool)
        .await
        .map(|done| done.rows_affected())
}
