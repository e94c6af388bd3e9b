//! `Idempotency-Key`: the store, and what running a request under its key
//! means for the commands it executes.
//!
//! The store: a key (hashed with a server secret, per credential scope) is
//! claimed by the first request with a lease, kept alive while it runs; its
//! response (sealed by the caller) is recorded when it ends. A request that
//! dies with the process leaves the lease to expire; one that fails on the
//! server's side gives it up at once. Either way a retry takes the key over
//! and completes the request (below). Entries are kept for 24 hours.
//!
//! Running under a key (`Attempt`, in scope for the request's task): the
//! ids and secrets the request creates derive from the key, and each
//! command it executes gets an id derived from the key and its step, stored
//! in its events' metadata with the key's hash. A retry of an interrupted
//! request therefore takes the same steps with the same ids: a step the
//! first attempt committed is found in the log and not executed again
//! (`Commands::execute`), the rest run, and the answer is the one the first
//! attempt would have given, the same API key included. Nothing is applied
//! twice, and nothing is lost.

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use sqlx::PgPool;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use uuid::Uuid;

/// A claimed key as stored: the request's fingerprint and, once the first
/// request finished, its status and sealed response.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Entry {
    pub fingerprint: String,
    pub response_status: Option<i32>,
    pub response: Option<Vec<u8>>,
    /// While a request runs under the key: until when it holds it.
    pub locked_until: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// What claiming a key found.
#[derive(Debug)]
pub enum Claim {
    /// This request runs under the key: first (`recovering` false), or
    /// taking over from an attempt that died or failed on the server's side.
    Run {
        created_at: DateTime<Utc>,
        recovering: bool,
    },
    /// Another request holds the key or has answered it.
    Taken(Entry),
}

/// Forgets keys older than 24 hours (the upkeep loop calls it; the index
/// on `created_at` keeps it from reading the rest).
pub async fn purge_expired(pool: &PgPool) -> sqlx::Result<u64> {
    sqlx::query("DELETE FROM idempotency_keys WHERE created_at < now() - interval '24 hours'")
        .execute(pool)
        .await
        .map(|done| done.rows_affected())
}

/// Claims the key for a request with this fingerprint, holding it for
/// `lease`: a new key, an expired one (as new), or one whose request died or
/// failed on the server's side without an answer (the same fingerprint).
pub async fn claim(
    pool: &PgPool,
    scope: &str,
    key_hash: &str,
    fingerprint: &str,
    lease: Duration,
) -> sqlx::Result<Claim> {
    let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
    // An expired key is as good as new, whoever purges it.
    sqlx::query(
        "DELETE FROM idempotency_keys
          WHERE scope = $1 AND key_hash = $2 AND created_at < now() - interval '24 hours'",
    )
    .bind(scope)
    .bind(key_hash)
    .execute(pool)
    .await?;
    let claimed: Option<(DateTime<Utc>, bool)> = sqlx::query_as(
        "INSERT INTO idempotency_keys AS k (scope, key_hash, fingerprint, locked_until)
         VALUES ($1, $2, $3, now() + make_interval(secs => $4 / 1000.0))
         ON CONFLICT (scope, key_hash) DO UPDATE
            SET locked_until = now() + make_interval(secs => $4 / 1000.0)
          WHERE k.response_status IS NULL AND k.fingerprint = $3
            AND (k.locked_until IS NULL OR k.locked_until <= now())
         RETURNING k.created_at, (xmax <> 0) AS recovering",
    )
    .bind(scope)
    .bind(key_hash)
    .bind(fingerprint)
    .bind(lease_ms as f64)
    .fetch_optional(pool)
    .await?;
    if let Some((created_at, recovering)) = claimed {
        return Ok(Claim::Run { created_at, recovering });
    }
    let entry: Entry = sqlx::query_as(
        "SELECT fingerprint, response_status, response, locked_until, created_at
           FROM idempotency_keys WHERE scope = $1 AND key_hash = $2",
    )
    .bind(scope)
    .bind(key_hash)
    .fetch_one(pool)
    .await?;
    Ok(Claim::Taken(entry))
}

/// Keeps the key held while its request runs.
pub async fn extend(pool: &PgPool, scope: &str, key_hash: &str, lease: Duration) -> sqlx::Result<()> {
    let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
    sqlx::query(
        "UPDATE idempotency_keys SET locked_until = now() + make_interval(secs => $3 / 1000.0)
          WHERE scope = $1 AND key_hash = $2 AND response_status IS NULL",
    )
    .bind(scope)
    .bind(key_hash)
    .bind(lease_ms as f64)
    .execute(pool)
    .await
    .map(drop)
}

/// Gives the key up without an answer (the request failed on the server's
/// side): a retry takes it over at once and completes what is missing.
pub async fn release(pool: &PgPool, scope: &str, key_hash: &str) -> sqlx::Result<()> {
    sqlx::query("UPDATE idempotency_keys SET locked_until = NULL WHERE scope = $1 AND key_hash = $2")
        .bind(scope)
        .bind(key_hash)
        .execute(pool)
        .await
        .map(drop)
}

/// Records the first request's response.
pub async fn record(pool: &PgPool, scope: &str, key_hash: &str, status: u16, sealed: &[u8]) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE idempotency_keys SET response_status = $3, response = $4, locked_until = NULL
          WHERE scope = $1 AND key_hash = $2",
    )
    .bind(scope)
    .bind(key_hash)
    .bind(i32::from(status))
    .bind(sealed)
    .execute(pool)
    .await
    .map(drop)
}

/// A request running under an idempotency key.
pub struct Attempt {
    /// The key's hash (with the server secret), as events' metadata carry it.
    key_hash: String,
    /// Derived from the key with the server secret: what ids and secrets
    /// derive from.
    seed: [u8; 32],
    /// When the key was first claimed: the time part of derived UUIDv7s.
    claimed_at_ms: u64,
    counters: Mutex<HashMap<&'static str, u32>>,
}

tokio::task_local! {
    static ATTEMPT: Arc<Attempt>;
}

impl Attempt {
    pub fn new(key_hash: String, seed: [u8; 32], claimed_at: DateTime<Utc>) -> Self {
        Self {
            key_hash,
            seed,
            claimed_at_ms: u64::try_from(claimed_at.timestamp_millis()).unwrap_or(0),
            counters: Mutex::default(),
        }
    }

    /// Runs `work` (the request) under this attempt.
    pub async fn run<F: Future>(self, work: F) -> F::Output {
        ATTEMPT.scope(Arc::new(self), work).await
    }

    /// The next 32 derived bytes for `label` (the n-th asked for that label).
    fn derive(&self, label: &'static str) -> [u8; 32] {
        let n = {
            let mut counters = self.counters.lock().expect("attempt counters");
            let n = counters.entry(label).or_default();
            *n += 1;
            *n
        };
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.seed).expect("any key length");
        mac.update(label.as_bytes());
        mac.update(&n.to_be_bytes());
        mac.finalize().into_bytes().into()
    }

    fn uuid(&self, label: &'static str) -> Uuid {
        let bytes = self.derive(label);
        let random: [u8; 10] = bytes[..10].try_into().expect("ten bytes");
        uuid::Builder::from_unix_timestamp_millis(self.claimed_at_ms, &random).into_uuid()
    }
}

fn current() -> Option<Arc<Attempt>> {
    ATTEMPT.try_with(Arc::clone).ok()
}

/// A new id: random, or under a key the one the first attempt created.
pub fn fresh_id<T: From<Uuid>>(label: &'static str) -> T {
    T::from(current().map_or_else(Uuid::now_v7, |attempt| attempt.uuid(label)))
}

/// 32 bytes for a new secret: random, or under a key the first attempt's.
pub fn fresh_secret() -> [u8; 32] {
    current().map_or_else(
        || {
            let mut bytes = [0u8; 32];
            rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
            bytes
        },
        |attempt| attempt.derive("secret"),
    )
}

/// Under a key: the key's hash and the id of the request's next command.
pub(crate) fn next_command() -> Option<(String, Uuid)> {
    current().map(|attempt| (attempt.key_hash.clone(), attempt.uuid("command")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(seed: u8) -> Attempt {
        Attempt::new("k".into(), [seed; 32], Utc::now())
    }

    #[tokio::test]
    async fn under_the_same_key_the_same_ids_come_in_the_same_order_per_label() {
        let first = attempt(1)
            .run(async {
                let a: Uuid = fresh_id("tenant");
                let s = fresh_secret();
                let b: Uuid = fresh_id("member");
                (a, b, s)
            })
            .await;
        // Labels are counted apart: asking in another order changes nothing.
        let again = attempt(1)
            .run(async {
                let b: Uuid = fresh_id("member");
                let a: Uuid = fresh_id("tenant");
                (a, b, fresh_secret())
            })
            .await;
        assert_eq!(first, again);
        let other = attempt(2).run(async { fresh_id::<Uuid>("tenant") }).await;
        assert_ne!(first.0, other);
        let outside: Uuid = fresh_id("tenant");
        assert_ne!(outside, first.0);
        assert_eq!(first.0.get_version_num(), 7);
    }
}
