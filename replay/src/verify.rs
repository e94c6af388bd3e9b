//! `verify`: recompute the history's evidence with code independent of the
//! database trigger, in one pass over the log in global order:
//! * every aggregate's events are numbered 1..n, chain to their predecessor
//!   and carry the hash their canonical encoding gives;
//! * the running digests (global and per tenant) match every signed
//!   checkpoint, whose signatures must verify with the audit public key;
//! * every aggregate head the digest subscriber recorded is still there.
//!
//! So an altered event, a removed one (middle, newest or a whole aggregate),
//! even by a superuser who disabled the triggers, is reported with the first
//! place where the evidence diverges.

use crate::hash::{GENESIS, HashedEvent, event_hash};
use coverwatch_domain::ids::TenantId;
use coverwatch_projections::digest::{GLOBAL_SCOPE, tenant_scope};
use coverwatch_projections::signing::{DIGEST_GENESIS, checkpoint_message, extend_digest, verify as verify_signature};
use futures::TryStreamExt;
use serde::Serialize;
use sqlx::PgPool;
use std::collections::{HashMap, VecDeque};

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
    pub checkpoints: u64,
    /// The first divergence: the earliest that names an aggregate, else the
    /// earliest of all (a digest mismatch only says "something before here").
    pub divergence: Option<Divergence>,
    /// All divergences found (at most 100), in global order.
    pub divergences: Vec<Divergence>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.divergences.is_empty()
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Checkpoint {
    pub scope: String,
    pub position: i64,
    pub count: i64,
    pub digest: String,
    pub recorded_at: chrono::DateTime<chrono::Utc>,
    pub public_key: String,
    pub signature: String,
}

#[derive(Debug, Clone, sqlx::FromRow)]
struct Head {
    aggregate_type: String,
    aggregate_id: String,
    sequence: i64,
    hash: String,
    position: i64,
}

/// Running evidence while folding events in global order.
pub struct Verifier {
    public_key: Option<String>,
    chains: HashMap<(String, String), (i64, String)>,
    digests: HashMap<String, (i64, String)>,
    checkpoints: VecDeque<Checkpoint>,
    /// The history may start mid-chain (an exported time range).
    partial: bool,
    pub events: u64,
    pub checkpoints_checked: u64,
    pub divergences: Vec<Divergence>,
}

fn divergence(
    event: Option<&HashedEvent>,
    position: i64,
    problem: &str,
    expected: String,
    found: String,
) -> Divergence {
    Divergence {
        aggregate_type: event.map(|e| e.aggregate_type.clone()).unwrap_or_default(),
        aggregate_id: event.map(|e| e.aggregate_id.clone()).unwrap_or_default(),
        sequence: event.map(|e| e.sequence).unwrap_or_default(),
        position,
        problem: problem.to_owned(),
        expected,
        found,
    }
}

impl Verifier {
    /// `public_key`: the audit key checkpoints must be signed with (hex);
    /// `None` checks each against the key it names. `start`: running digests
    /// before the first event (for partial histories such as bundles).
    pub fn new(
        public_key: Option<String>,
        mut checkpoints: Vec<Checkpoint>,
        start: HashMap<String, (i64, String)>,
    ) -> Self {
        checkpoints.sort_by_key(|c| c.position);
        Self {
            public_key,
            chains: HashMap::new(),
            digests: start,
            checkpoints: checkpoints.into(),
            partial: false,
            events: 0,
            checkpoints_checked: 0,
            divergences: vec![],
        }
    }

    /// Accept aggregates whose first event here is not their sequence 1.
    pub fn partial(mut self) -> Self {
        self.partial = true;
        self
    }

    fn push(&mut self, divergence: Divergence) {
        if self.divergences.len() < 100 {
            self.divergences.push(divergence);
        }
    }

    /// Compare every checkpoint strictly before `position` with the running digests.
    fn settle_checkpoints(&mut self, before: i64) {
        while self.checkpoints.front().is_some_and(|c| c.position < before) {
            let checkpoint = self.checkpoints.pop_front().expect("checked above");
            self.checkpoints_checked += 1;
            let message = checkpoint_message(
                &checkpoint.scope,
                checkpoint.position,
                checkpoint.count,
                &checkpoint.digest,
                &coverwatch_projections::digest::checkpoint_time(checkpoint.recorded_at),
            );
            let key = self.public_key.clone().unwrap_or_else(|| checkpoint.public_key.clone());
            let signed = hex::decode(&checkpoint.signature)
                .ok()
                .is_some_and(|s| verify_signature(&key, message.as_bytes(), &s).is_ok());
            if !signed {
                self.push(divergence(
                    None,
                    checkpoint.position,
                    &format!("checkpoint signature invalid ({})", checkpoint.scope),
                    key,
                    checkpoint.signature.clone(),
                ));
                continue;
            }
            let (count, digest) = self
                .digests
                .get(&checkpoint.scope)
                .cloned()
                .unwrap_or((0, DIGEST_GENESIS.to_owned()));
            if count != checkpoint.count || digest != checkpoint.digest {
                self.push(divergence(
                    None,
                    checkpoint.position,
                    &format!(
                        "{} digest differs from its signed checkpoint: events were altered or removed",
                        checkpoint.scope
                    ),
                    format!("{} events, digest {}", checkpoint.count, checkpoint.digest),
                    format!("{count} events, digest {digest}"),
                ));
            }
        }
    }

    pub fn event(&mut self, event: &HashedEvent) {
        self.settle_checkpoints(event.position);
        self.events += 1;
        let key = (event.aggregate_type.clone(), event.aggregate_id.clone());
        let (expected_sequence, expected_prev) = match self.chains.get(&key) {
            Some((sequence, hash)) => (sequence + 1, hash.clone()),
            None => (1, GENESIS.to_owned()),
        };
        // In a partial history an aggregate's first event here anchors its chain.
        let checkable = self.chains.contains_key(&key) || !self.partial;
        if checkable && event.sequence != expected_sequence {
            self.push(divergence(
                Some(event),
                event.position,
                "sequence gap: an event is missing",
                expected_sequence.to_string(),
                event.sequence.to_string(),
            ));
        } else if checkable && event.prev_hash != expected_prev {
            self.push(divergence(
                Some(event),
                event.position,
                "broken chain",
                expected_prev,
                event.prev_hash.clone(),
            ));
        }
        let recomputed = event_hash(&event.prev_hash, event);
        if recomputed != event.hash {
            self.push(divergence(
                Some(event),
                event.position,
                "hash mismatch: the event was altered",
                recomputed,
                event.hash.clone(),
            ));
        }
        self.chains.insert(key, (event.sequence, event.hash.clone()));
        let mut scopes = vec![GLOBAL_SCOPE.to_owned()];
        scopes.extend(event.tenant_id.map(tenant_scope));
        for scope in scopes {
            let entry = self.digests.entry(scope).or_insert((0, DIGEST_GENESIS.to_owned()));
            entry.0 += 1;
            entry.1 = extend_digest(&entry.1, event.position, &event.hash);
        }
    }

    /// The last (sequence, hash) seen per aggregate.
    pub fn heads(&self) -> &HashMap<(String, String), (i64, String)> {
        &self.chains
    }

    pub fn finish(mut self) -> Report {
        self.settle_checkpoints(i64::MAX);
        let aggregates = self.chains.len() as u64;
        self.divergences.sort_by_key(|d| d.position);
        Report {
            events: self.events,
            aggregates,
            checkpoints: self.checkpoints_checked,
            divergence: self
                .divergences
                .iter()
                .find(|d| !d.aggregate_id.is_empty())
                .or(self.divergences.first())
                .cloned(),
            divergences: self.divergences,
        }
    }
}

pub const HASHED_COLUMNS: &str = "position, event_id, aggregate_type, aggregate_id, sequence, event_type, \
    event_version, recorded_at, tenant_id, payload::text AS payload, metadata::text AS metadata, prev_hash, hash";

/// Verify the whole log, or one tenant's part of it, against the signed
/// checkpoints and heads in the database. `public_key`: the published audit
/// key (hex) the checkpoints must verify with.
pub async fn verify_log(pool: &PgPool, tenant: Option<TenantId>, public_key: Option<String>) -> anyhow::Result<Report> {
    let scopes: Vec<String> = match tenant {
        Some(t) => vec![tenant_scope(t)],
        None => vec![], // all scopes
    };
    let checkpoints: Vec<Checkpoint> = sqlx::query_as(
        "SELECT scope, position, count, digest, recorded_at, public_key, signature FROM digest_checkpoints
          WHERE cardinality($1::text[]) = 0 OR scope = ANY($1) ORDER BY position",
    )
    .bind(&scopes)
    .fetch_all(pool)
    .await?;
    let heads: Vec<Head> = sqlx::query_as(
        "SELECT aggregate_type, aggregate_id, sequence, hash, position FROM aggregate_heads
          WHERE $1::uuid IS NULL OR tenant_id = $1",
    )
    .bind(tenant)
    .fetch_all(pool)
    .await?;
    let mut verifier = Verifier::new(public_key, checkpoints, HashMap::new());
    let sql = format!("SELECT {HASHED_COLUMNS} FROM events WHERE $1::uuid IS NULL OR tenant_id = $1 ORDER BY position");
    let mut rows = sqlx::query_as::<_, HashedEvent>(&sql).bind(tenant).fetch(pool);
    while let Some(event) = rows.try_next().await? {
        verifier.event(&event);
    }
    drop(rows);
    // Every head the digest subscriber saw must still be the aggregate's last event.
    let mut missing = vec![];
    for head in heads {
        let key = (head.aggregate_type.clone(), head.aggregate_id.clone());
        match verifier.heads().get(&key) {
            Some((sequence, hash)) if *sequence == head.sequence && *hash == head.hash => {}
            Some((sequence, _)) if *sequence < head.sequence => missing.push(Divergence {
                aggregate_type: head.aggregate_type,
                aggregate_id: head.aggregate_id,
                sequence: head.sequence,
                position: head.position,
                problem: "newest events removed".into(),
                expected: format!("last sequence {}", head.sequence),
                found: format!("last sequence {sequence}"),
            }),
            Some(_) => {} // newer events than the head: not yet digested
            None => missing.push(Divergence {
                aggregate_type: head.aggregate_type,
                aggregate_id: head.aggregate_id,
                sequence: head.sequence,
                position: head.position,
                problem: "aggregate removed: none of its events remain".into(),
                expected: format!("{} events", head.sequence),
                found: "0 events".into(),
            }),
        }
    }
    for divergence in missing {
        verifier.push(divergence);
    }
    Ok(verifier.finish())
}
