//! An event as stored in the log, the gap-free batch read subscribers use,
//! and the tenant's stream auditors page through.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct StoredEvent {
    pub position: i64,
    pub event_id: Uuid,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    pub recorded_at: DateTime<Utc>,
    pub tenant_id: Option<coverwatch_domain::ids::TenantId>,
    #[sqlx(json)]
    pub payload: Value,
    #[sqlx(json)]
    pub metadata: Value,
    pub prev_hash: String,
    pub hash: String,
}

impl StoredEvent {
    /// A metadata value as text, if present.
    pub fn meta(&self, key: &str) -> Option<&str> {
        self.metadata.get(key).and_then(Value::as_str)
    }

    /// The event as its aggregate's type. Every subscriber decodes here: when
    /// an event's shape changes incompatibly, its `event_version` is bumped
    /// and the upcaster that turns older payloads into the new shape goes
    /// here (and on the write side's event store), so read models keep
    /// reading the whole history.
    pub fn decode<E: serde::de::DeserializeOwned>(&self) -> anyhow::Result<E> {
        serde_json::from_value(self.payload.clone()).map_err(|error| {
            anyhow::anyhow!(
                "decoding {} {} at position {}: {error}",
                self.event_type,
                self.event_version,
                self.position
            )
        })
    }

    /// The payload of an externally tagged event (`{"EventName": {...}}`).
    pub fn body(&self) -> &Value {
        self.payload.get(&self.event_type).unwrap_or(&self.payload)
    }
}

pub const EVENT_COLUMNS: &str = "position, event_id, aggregate_type, aggregate_id, sequence, event_type, \
     event_version, recorded_at, tenant_id, payload, metadata, prev_hash, hash";

/// The next events after `after`, in global order, taking only events whose
/// writing transaction has finished (below the snapshot's xmin). A slow
/// transaction holds the horizon back instead of being skipped.
pub async fn read_batch(conn: &mut PgConnection, after: i64, limit: i64) -> Result<Vec<StoredEvent>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {EVENT_COLUMNS} FROM events
          WHERE position > $1 AND position < coverwatch_visible_horizon()
          ORDER BY position LIMIT $2"
    ))
    .bind(after)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// A tenant's events strictly after `after`, in global order (for auditors),
/// bounded by the same visibility horizon the subscribers use: a position
/// is shown only once every transaction that could still commit a lower
/// one has finished, so a client following the stream with the last
/// position it saw never skips an event that commits late.
pub async fn tenant_events_page(
    pool: &sqlx::PgPool,
    tenant_id: coverwatch_domain::ids::TenantId,
    after: i64,
    limit: i64,
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {EVENT_COLUMNS} FROM events
          WHERE tenant_id = $1 AND position > $2 AND position < coverwatch_visible_horizon()
          ORDER BY position LIMIT $3"
    ))
    .bind(tenant_id)
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await
}
