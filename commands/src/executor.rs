//! Executes commands on an aggregate: loads it from the log, lets it decide,
//! appends the events with their metadata, and reports the commit's position.

use crate::error::CommandError;
use crate::idempotency;
use crate::metadata::CommandMetadata;
use crate::snapshots::{SealedSnapshots, SnapshotKey};
use anyhow::Context;
use coverwatch_domain::subscription::Subscription;
use cqrs_es::persist::PersistedEventStore;
use cqrs_es::{Aggregate, AggregateError, CqrsFramework, EventStore};
use postgres_es::PostgresEventRepository;
use sqlx::PgPool;
use std::fmt::Display;
use std::sync::Arc;
use tokio::sync::watch;
use uuid::Uuid;

type Store<A> = PersistedEventStore<SealedSnapshots, A>;

/// The id of the next command: random, or under an idempotency key the one
/// derived for the request's next step (with the key's hash).
fn next_command() -> (Uuid, Option<String>) {
    match idempotency::next_command() {
        Some((key_hash, command_id)) => (command_id, Some(key_hash)),
        None => (Uuid::now_v7(), None),
    }
}

/// How often a command decided on a stale aggregate is decided again.
pub const RETRIES: usize = 25;

/// Tenant commands (the Tenant aggregate's id is the tenant id).
pub type TenantCommands = Commands<coverwatch_domain::tenant::Tenant>;
/// Subscription commands (one subscription per tenant, under the tenant's id).
pub type SubscriptionCommands = Commands<Subscription>;
/// A tenant's connected cloud accounts (under the tenant's id).
pub type CloudAccountsCommands = Commands<coverwatch_domain::cloud::CloudAccounts>;
/// Cloud organizations (under their own ids).
pub type CloudOrganizationCommands = Commands<coverwatch_domain::cloud::CloudOrganization>;
/// Detections (under their own ids).
pub type DetectionCommands = Commands<coverwatch_domain::detection::Detection>;
/// Accounts' scan inventories (under `inventory_id(tenant, account)`).
pub type InventoryCommands = Commands<coverwatch_domain::scan::inventory::AccountInventory>;

/// Loading a tenant reads its latest snapshot and the events after it, so a
/// command costs the same on the thousandth event as on the first. Snapshots
/// are a cache of the fold, never a source of truth: sealed by the server
/// (`crate::snapshots`), so one the log never produced is not used, and a
/// migration that changes the aggregate's serialized shape deletes them (new
/// fields take `#[serde(default)]`).
const SNAPSHOT_EVERY: usize = 20;

fn snapshot_store<A: Aggregate>(pool: &PgPool, key: &SnapshotKey) -> Store<A> {
    let repository = SealedSnapshots::new(PostgresEventRepository::new(pool.clone()), key.clone(), SNAPSHOT_EVERY);
    PersistedEventStore::new_snapshot_store(repository, SNAPSHOT_EVERY)
}

/// Where a successful command left the aggregate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    /// Global position of the commit's last event (0 if nothing was appended).
    pub position: i64,
    /// The aggregate's version (its last sequence) after the commit.
    pub version: u64,
}

pub struct Commands<A: Aggregate> {
    cqrs: CqrsFramework<A, Store<A>>,
    store: Store<A>,
    pool: PgPool,
    committed: Arc<watch::Sender<u64>>,
}

impl<A> Commands<A>
where
    A: Aggregate,
    CommandError: From<AggregateError<A::Error>>,
{
    /// `committed` is bumped after every append, so in-process subscribers
    /// poll at once instead of waiting for their next tick.
    /// Snapshots are sealed with `key` (`crate::snapshots`).
    pub fn new(pool: PgPool, services: A::Services, committed: Arc<watch::Sender<u64>>, key: &SnapshotKey) -> Self {
        let cqrs = CqrsFramework::new(snapshot_store(&pool, key), vec![], services);
        Self {
            cqrs,
            store: snapshot_store(&pool, key),
            pool,
            committed,
        }
    }

    pub async fn execute(
        &self,
        id: impl Display,
        command: A::Command,
        metadata: &CommandMetadata,
    ) -> Result<Committed, CommandError> {
        self.execute_as(next_command(), id, command, metadata).await
    }

    /// Executes under `command_id`; under an idempotency key, a command the
    /// log already holds (a retry after the first attempt committed it) is
    /// not executed again: its commit is reported as it stands.
    async fn execute_as(
        &self,
        (command_id, key_hash): (Uuid, Option<String>),
        id: impl Display,
        command: A::Command,
        metadata: &CommandMetadata,
    ) -> Result<Committed, CommandError> {
        let aggregate_id = id.to_string();
        let mut map = metadata.to_map(command_id);
        if let Some(key_hash) = key_hash {
            if let Some(committed) = self.committed_under(&key_hash, command_id, &aggregate_id).await? {
                return Ok(committed);
            }
            map.insert("idempotency_key".to_owned(), key_hash);
        }
        self.cqrs.execute_with_metadata(&aggregate_id, command, map).await?;
        self.committed.send_modify(|n| *n = n.wrapping_add(1));
        // The commit's events are normally the aggregate's newest: look at those
        // first and scan further back only if others were appended since.
        let mut row: Option<(i64, i64)> = None;
        for depth in [8i64, i64::MAX] {
            row = sqlx::query_as(
                "SELECT position, sequence FROM (
                    SELECT position, sequence, metadata FROM events
                     WHERE aggregate_type = $4 AND aggregate_id = $1
                     ORDER BY sequence DESC LIMIT $3) newest
                  WHERE metadata ->> 'command_id' = $2
                  ORDER BY sequence DESC LIMIT 1",
            )
            .bind(&aggregate_id)
            .bind(command_id.to_string())
            .bind(depth)
            .bind(A::TYPE)
            .fetch_optional(&self.pool)
            .await
            .context("reading the commit's position")?;
            if row.is_some() {
                break;
            }
        }
        match row {
            Some((position, sequence)) => Ok(Committed {
                position,
                version: sequence as u64,
            }),
            // The command decided nothing (e.g. a role set to the role it had).
            None => Ok(Committed {
                position: 0,
                version: self.version_of(&aggregate_id).await?,
            }),
        }
    }

    /// Like `execute`, but a concurrent change of the aggregate makes it
    /// decide again on the new state (up to `attempts` times) instead of
    /// failing: for commands without `If-Match` whose rule must see every
    /// concurrent winner (a limit), so losers get the rule's answer.
    pub async fn execute_retrying(
        &self,
        id: impl Display,
        command: A::Command,
        metadata: &CommandMetadata,
        attempts: usize,
    ) -> Result<Committed, CommandError>
    where
        A::Command: Clone,
    {
        let mut left = attempts.max(1);
        // One command, however often it is decided again: one id.
        let command_id = next_command();
        let id = id.to_string();
        loop {
            left -= 1;
            match self
                .execute_as(command_id.clone(), &id, command.clone(), metadata)
                .await
            {
                Err(CommandError::Conflict) if left > 0 => {
                    // Spread the retries of many losers over a few ms.
                    let jitter = rand::random::<u64>() % 5;
                    tokio::time::sleep(std::time::Duration::from_millis(jitter)).await;
                }
                other => return other,
            }
        }
    }

    /// The commit of `command_id` under the key, if the log has it. Found
    /// on another aggregate, the retry has not taken the first attempt's
    /// steps (something it read changed meanwhile): it stops rather than
    /// risk applying anything twice.
    async fn committed_under(
        &self,
        key_hash: &str,
        command_id: Uuid,
        aggregate_id: &str,
    ) -> Result<Option<Committed>, CommandError> {
        let found: Option<(String, String, i64, i64)> = sqlx::query_as(
            "SELECT aggregate_type, aggregate_id, max(position), max(sequence) FROM events
              WHERE metadata ->> 'idempotency_key' = $1 AND metadata ->> 'command_id' = $2
              GROUP BY aggregate_type, aggregate_id",
        )
        .bind(key_hash)
        .bind(command_id.to_string())
        .fetch_optional(&self.pool)
        .await
        .context("looking for a command committed under the idempotency key")?;
        match found {
            None => Ok(None),
            Some((kind, id, position, sequence)) if kind == A::TYPE && id == aggregate_id => Ok(Some(Committed {
                position,
                version: sequence as u64,
            })),
            Some(_) => Err(CommandError::Diverged),
        }
    }

    async fn version_of(&self, id: &str) -> Result<u64, CommandError> {
        let context = self.store.load_aggregate(id).await.map_err(CommandError::from)?;
        Ok(context.current_sequence as u64)
    }

    /// The aggregate as the log has it now: for decisions that span
    /// aggregates (a parent's hierarchy), never to answer queries.
    pub async fn load(&self, id: impl Display) -> Result<A, CommandError> {
        let context = self
            .store
            .load_aggregate(&id.to_string())
            .await
            .map_err(CommandError::from)?;
        Ok(context.aggregate)
    }
}
