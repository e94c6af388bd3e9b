//! Executes Tenant commands: loads the aggregate from the log, lets it decide,
//! appends the events with their metadata, and reports the commit's position.

use crate::error::CommandError;
use crate::metadata::CommandMetadata;
use anyhow::Context;
use coverwatch_domain::tenant::{Tenant, TenantCommand, TenantServices, Versioned};
use cqrs_es::persist::PersistedEventStore;
use cqrs_es::{CqrsFramework, EventStore};
use postgres_es::PostgresEventRepository;
use sqlx::PgPool;
use std::sync::Arc;
use tokio::sync::watch;
use uuid::Uuid;

type Store = PersistedEventStore<PostgresEventRepository, Tenant>;

/// Where a successful command left the aggregate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    /// Global position of the commit's last event (0 if nothing was appended).
    pub position: i64,
    /// The aggregate's version (its last sequence) after the commit.
    pub version: u64,
}

pub struct TenantCommands {
    cqrs: CqrsFramework<Tenant, Store>,
    store: Store,
    pool: PgPool,
    committed: Arc<watch::Sender<u64>>,
}

impl TenantCommands {
    /// `committed` is bumped after every append, so in-process subscribers
    /// poll at once instead of waiting for their next tick.
    pub fn new(pool: PgPool, services: TenantServices, committed: Arc<watch::Sender<u64>>) -> Self {
        let cqrs = CqrsFramework::new(
            PersistedEventStore::new_event_store(PostgresEventRepository::new(pool.clone())),
            vec![],
            services,
        );
        Self {
            cqrs,
            store: PersistedEventStore::new_event_store(PostgresEventRepository::new(pool.clone())),
            pool,
            committed,
        }
    }

    pub async fn execute(
        &self,
        tenant_id: Uuid,
        command: Versioned<TenantCommand>,
        metadata: &CommandMetadata,
    ) -> Result<Committed, CommandError> {
        let command_id = Uuid::now_v7();
        let aggregate_id = tenant_id.to_string();
        self.cqrs
            .execute_with_metadata(&aggregate_id, command, metadata.to_map(command_id))
            .await?;
        self.committed.send_modify(|n| *n = n.wrapping_add(1));
        let row: Option<(i64, i64)> = sqlx::query_as(
            "SELECT position, sequence FROM events
              WHERE aggregate_type = 'tenant' AND aggregate_id = $1
                AND metadata ->> 'command_id' = $2
              ORDER BY sequence DESC LIMIT 1",
        )
        .bind(&aggregate_id)
        .bind(command_id.to_string())
        .fetch_optional(&self.pool)
        .await
        .context("reading the commit's position")?;
        match row {
            Some((position, sequence)) => Ok(Committed {
                position,
                version: sequence as u64,
            }),
            // The command decided nothing (e.g. a role set to the role it had).
            None => Ok(Committed {
                position: 0,
                version: self.load(tenant_id).await?.version,
            }),
        }
    }

    /// The aggregate as the log has it now: for decisions that span
    /// aggregates (a parent's hierarchy), never to answer queries.
    pub async fn load(&self, tenant_id: Uuid) -> Result<Tenant, CommandError> {
        let context = self
            .store
            .load_aggregate(&tenant_id.to_string())
            .await
            .map_err(CommandError::from)?;
        Ok(context.aggregate)
    }
}
