//! Verify the hash chains: every aggregate's events must be numbered 1..n
//! without gaps, chain to their predecessor and carry the hash the canonical
//! encoding gives. Reports the first divergence exactly.

use crate::hash::{GENESIS, HashedEvent, event_hash};
use futures::TryStreamExt;
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Divergence {
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub position: i64,
    pub problem: String,
    pub expected: String,
    pub found: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub events: u64,
    pub aggregates: u64,
    pub divergence: Option<Divergence>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.divergence.is_none()
    }
}

/// Verify all events, or one tenant's.
pub async fn verify_chains(pool: &PgPool, tenant: Option<Uuid>) -> anyhow::Result<Report> {
    let mut rows = sqlx::query_as::<_, HashedEvent>(
        "SELECT position, event_id, aggregate_type, aggregate_id, sequence, event_type, event_version,
                recorded_at, tenant_id, payload::text AS payload, metadata::text AS metadata, prev_hash, hash
           FROM events
          WHERE $1::uuid IS NULL OR tenant_id = $1
          ORDER BY aggregate_type, aggregate_id, sequence",
    )
    .bind(tenant)
    .fetch(pool);
    let mut report = Report {
        events: 0,
        aggregates: 0,
        divergence: None,
    };
    let mut previous: Option<HashedEvent> = None;
    while let Some(event) = rows.try_next().await? {
        report.events += 1;
        let same_aggregate = previous
            .as_ref()
            .is_some_and(|p| p.aggregate_type == event.aggregate_type && p.aggregate_id == event.aggregate_id);
        if !same_aggregate {
            report.aggregates += 1;
        }
        let (expected_sequence, expected_prev) = match (&previous, same_aggregate) {
            (Some(p), true) => (p.sequence + 1, p.hash.clone()),
            _ => (1, GENESIS.to_owned()),
        };
        let diverge = |problem: &str, expected: String, found: String| Divergence {
            aggregate_type: event.aggregate_type.clone(),
            aggregate_id: event.aggregate_id.clone(),
            sequence: event.sequence,
            position: event.position,
            problem: problem.to_owned(),
            expected,
            found,
        };
        let divergence = if event.sequence != expected_sequence {
            Some(diverge(
                "sequence gap",
                expected_sequence.to_string(),
                event.sequence.to_string(),
            ))
        } else if event.prev_hash != expected_prev {
            Some(diverge("broken chain", expected_prev, event.prev_hash.clone()))
        } else {
            let recomputed = event_hash(&event.prev_hash, &event);
            (recomputed != event.hash).then(|| diverge("hash mismatch", recomputed, event.hash.clone()))
        };
        if divergence.is_some() {
            report.divergence = divergence;
            return Ok(report);
        }
        previous = Some(event);
    }
    Ok(report)
}
