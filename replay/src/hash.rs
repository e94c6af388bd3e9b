//! The canonical encoding of an event and its SHA-256 chain hash, written
//! independently of the SQL trigger that computes it at append time.
//!
//! `hash = SHA-256("coverwatch.event.v1" || F(prev_hash) || F(event_id) ||
//! F(aggregate_type) || F(aggregate_id) || F(sequence) || F(event_type) ||
//! F(event_version) || F(recorded_at) || F(tenant_id) || F(payload) ||
//! F(metadata))` where `F(s) = len(s) ":" s ","` (length in UTF-8 bytes),
//! `recorded_at` is UTC as `YYYY-MM-DDTHH:MM:SS.ffffffZ`, an absent tenant is
//! the empty string, and payload/metadata are the stored JSON text. The first
//! event of an aggregate chains to 64 zeros.

use chrono::{DateTime, Utc};
use coverwatch_domain::ids::TenantId;
use sha2::{Digest, Sha256};
use uuid::Uuid;

pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The hashed fields of one event, as stored.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct HashedEvent {
    pub position: i64,
    pub event_id: Uuid,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    pub recorded_at: DateTime<Utc>,
    pub tenant_id: Option<TenantId>,
    pub payload: String,
    pub metadata: String,
    pub prev_hash: String,
    pub hash: String,
}

fn field(hasher: &mut Sha256, value: &str) {
    hasher.update(value.len().to_string().as_bytes());
    hasher.update(b":");
    hasher.update(value.as_bytes());
    hasher.update(b",");
}

/// The hash `event` must carry if it follows `prev_hash`.
pub fn event_hash(prev_hash: &str, event: &HashedEvent) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"coverwatch.event.v1");
    field(&mut hasher, prev_hash);
    field(&mut hasher, &event.event_id.to_string());
    field(&mut hasher, &event.aggregate_type);
    field(&mut hasher, &event.aggregate_id);
    field(&mut hasher, &event.sequence.to_string());
    field(&mut hasher, &event.event_type);
    field(&mut hasher, &event.event_version);
    field(
        &mut hasher,
        &event.recorded_at.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
    );
    field(&mut hasher, &event.tenant_id.map(|t| t.to_string()).unwrap_or_default());
    field(&mut hasher, &event.payload);
    field(&mut hasher, &event.metadata);
    hex::encode(hasher.finalize())
}
