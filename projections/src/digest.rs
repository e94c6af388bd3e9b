//! The digest subscriber: in global order, extends a running digest over every
//! event (for the whole log and per tenant), records each aggregate's head,
//! and now and then stores a checkpoint of a digest signed with the audit key.
//! It is never rebuilt: recomputing it from a tampered log would bless the
//! tampering. `coverwatch replay verify` recomputes and compares instead.

use crate::event::StoredEvent;
use crate::runtime::Subscriber;
use crate::signing::{AuditSigner, DIGEST_GENESIS, checkpoint_message, extend_digest};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use std::collections::BTreeMap;

pub struct Digests {
    signer: AuditSigner,
    /// A checkpoint is stored once a scope has this many new events...
    every: i64,
    /// ...or this much time has passed since its last checkpoint.
    max_age: chrono::Duration,
}

impl Digests {
    pub fn new(signer: AuditSigner, every: i64, max_age: chrono::Duration) -> Self {
        Self { signer, every, max_age }
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
struct ScopeState {
    scope: String,
    position: i64,
    count: i64,
    digest: String,
    checkpoint_count: i64,
    checkpoint_at: DateTime<Utc>,
}

#[derive(Default)]
struct Checkpoints {
    scope: Vec<String>,
    position: Vec<i64>,
    count: Vec<i64>,
    digest: Vec<String>,
    signature: Vec<String>,
}

pub fn tenant_scope(tenant: coverwatch_domain::ids::TenantId) -> String {
    format!("tenant:{tenant}")
}

pub const GLOBAL_SCOPE: &str = "global";

/// The canonical time format of checkpoints (what is signed).
pub fn checkpoint_time(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

#[async_trait]
impl Subscriber for Digests {
    fn name(&self) -> &'static str {
        "digests"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["digest_state", "digest_checkpoints", "aggregate_heads"]
    }

    fn rebuildable(&self) -> bool {
        false
    }

    fn awaited(&self) -> bool {
        false
    }

    async fn handle(&self, conn: &mut PgConnection, events: &[StoredEvent]) -> anyhow::Result<()> {
        let mut scopes: Vec<String> = vec![GLOBAL_SCOPE.to_owned()];
        scopes.extend(events.iter().filter_map(|e| e.tenant_id).map(tenant_scope));
        scopes.sort();
        scopes.dedup();
        let loaded: Vec<ScopeState> = sqlx::query_as("SELECT * FROM digest_state WHERE scope = ANY($1)")
            .bind(&scopes)
            .fetch_all(&mut *conn)
            .await?;
        let now = Utc::now();
        let mut states: BTreeMap<String, ScopeState> = loaded.into_iter().map(|s| (s.scope.clone(), s)).collect();
        let mut heads: BTreeMap<(String, String), &StoredEvent> = BTreeMap::new();
        for event in events {
            let mut event_scopes = vec![GLOBAL_SCOPE.to_owned()];
            event_scopes.extend(event.tenant_id.map(tenant_scope));
            for scope in event_scopes {
                let state = states.entry(scope.clone()).or_insert_with(|| ScopeState {
                    scope,
                    position: 0,
                    count: 0,
                    digest: DIGEST_GENESIS.to_owned(),
                    checkpoint_count: 0,
                    checkpoint_at: now,
                });
                // Replays of already-digested events change nothing.
                if event.position <= state.position {
                    continue;
                }
                state.digest = extend_digest(&state.digest, event.position, &event.hash);
                state.count += 1;
                state.position = event.position;
            }
            heads.insert((event.aggregate_type.clone(), event.aggregate_id.clone()), event);
        }

        let mut checkpoints = Checkpoints::default();
        for state in states.values_mut() {
            let due = state.count - state.checkpoint_count >= self.every || now - state.checkpoint_at >= self.max_age;
            if due && state.count > state.checkpoint_count {
                let recorded_at = checkpoint_time(now);
                let message =
                    checkpoint_message(&state.scope, state.position, state.count, &state.digest, &recorded_at);
                checkpoints.scope.push(state.scope.clone());
                checkpoints.position.push(state.position);
                checkpoints.count.push(state.count);
                checkpoints.digest.push(state.digest.clone());
                checkpoints
                    .signature
                    .push(hex::encode(self.signer.sign(message.as_bytes())));
                state.checkpoint_count = state.count;
                state.checkpoint_at = now;
            }
        }
        // One statement per table, however many tenants the batch touched.
        sqlx::query(
            "INSERT INTO digest_checkpoints (scope, position, count, digest, recorded_at, public_key, signature)
             SELECT scope, position, count, digest, $5, $6, signature
               FROM UNNEST($1::text[], $2::bigint[], $3::bigint[], $4::text[], $7::text[])
                    AS c(scope, position, count, digest, signature)
             ON CONFLICT DO NOTHING",
        )
        .bind(&checkpoints.scope)
        .bind(&checkpoints.position)
        .bind(&checkpoints.count)
        .bind(&checkpoints.digest)
        .bind(now)
        .bind(self.signer.public_key_hex())
        .bind(&checkpoints.signature)
        .execute(&mut *conn)
        .await?;
        let rows: Vec<&ScopeState> = states.values().collect();
        sqlx::query(
            "INSERT INTO digest_state (scope, position, count, digest, checkpoint_count, checkpoint_at)
             SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::bigint[], $4::text[], $5::bigint[], $6::timestamptz[])
             ON CONFLICT (scope) DO UPDATE SET position = EXCLUDED.position, count = EXCLUDED.count,
                    digest = EXCLUDED.digest, checkpoint_count = EXCLUDED.checkpoint_count,
                    checkpoint_at = EXCLUDED.checkpoint_at",
        )
        .bind(rows.iter().map(|s| s.scope.clone()).collect::<Vec<_>>())
        .bind(rows.iter().map(|s| s.position).collect::<Vec<_>>())
        .bind(rows.iter().map(|s| s.count).collect::<Vec<_>>())
        .bind(rows.iter().map(|s| s.digest.clone()).collect::<Vec<_>>())
        .bind(rows.iter().map(|s| s.checkpoint_count).collect::<Vec<_>>())
        .bind(rows.iter().map(|s| s.checkpoint_at).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await?;

        let mut columns: (
            Vec<String>,
            Vec<String>,
            Vec<Option<coverwatch_domain::ids::TenantId>>,
            Vec<i64>,
            Vec<String>,
            Vec<i64>,
        ) = Default::default();
        for ((aggregate_type, aggregate_id), event) in heads {
            columns.0.push(aggregate_type);
            columns.1.push(aggregate_id);
            columns.2.push(event.tenant_id);
            columns.3.push(event.sequence);
            columns.4.push(event.hash.clone());
            columns.5.push(event.position);
        }
        sqlx::query(
            "INSERT INTO aggregate_heads (aggregate_type, aggregate_id, tenant_id, sequence, hash, position)
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::uuid[], $4::bigint[], $5::text[], $6::bigint[])
             ON CONFLICT (aggregate_type, aggregate_id) DO UPDATE
                SET sequence = EXCLUDED.sequence, hash = EXCLUDED.hash, position = EXCLUDED.position
              WHERE aggregate_heads.position < EXCLUDED.position",
        )
        .bind(columns.0)
        .bind(columns.1)
        .bind(columns.2)
        .bind(columns.3)
        .bind(columns.4)
        .bind(columns.5)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}
