//! The store behind `Idempotency-Key`: a key (hashed, per credential scope)
//! is claimed by the first request, which records its response (sealed by
//! the caller) or releases the key when it failed on the server's side.
//! Entries are kept for 24 hours.

use sqlx::PgPool;

/// A claimed key as stored: the request's fingerprint and, once the first
/// request finished, its status and sealed response.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Entry {
    pub fingerprint: String,
    pub response_status: Option<i32>,
    pub response: Option<Vec<u8>>,
}

/// Forgets keys older than 24 hours.
pub async fn purge_expired(pool: &PgPool) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM idempotency_keys WHERE created_at < now() - interval '24 hours'")
        .execute(pool)
        .await
        .map(drop)
}

/// Claims the key for a request with this fingerprint; false when it was
/// already claimed.
pub async fn claim(pool: &PgPool, scope: &str, key_hash: &str, fingerprint: &str) -> sqlx::Result<bool> {
    let claimed = sqlx::query(
        "INSERT INTO idempotency_keys (scope, key_hash, fingerprint) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
    )
    .bind(scope)
    .bind(key_hash)
    .bind(fingerprint)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(claimed == 1)
}

pub async fn find(pool: &PgPool, scope: &str, key_hash: &str) -> sqlx::Result<Option<Entry>> {
    sqlx::query_as(
        "SELECT fingerprint, response_status, response FROM idempotency_keys WHERE scope = $1 AND key_hash = $2",
    )
    .bind(scope)
    .bind(key_hash)
    .fetch_optional(pool)
    .await
}

/// Gives the key up (the request failed on the server's side: a retry runs).
pub async fn release(pool: &PgPool, scope: &str, key_hash: &str) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM idempotency_keys WHERE scope = $1 AND key_hash = $2")
        .bind(scope)
        .bind(key_hash)
        .execute(pool)
        .await
        .map(drop)
}

/// Records the first request's response.
pub async fn record(pool: &PgPool, scope: &str, key_hash: &str, status: u16, sealed: &[u8]) -> sqlx::Result<()> {
    sqlx::query("UPDATE idempotency_keys SET response_status = $3, response = $4 WHERE scope = $1 AND key_hash = $2")
        .bind(scope)
        .bind(key_hash)
        .bind(i32::from(status))
        .bind(sealed)
        .execute(pool)
        .await
        .map(drop)
}
