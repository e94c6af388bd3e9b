//! What every handler shares.

use crate::settings::Settings;
use coverwatch_commands::billing::Billing;
use coverwatch_commands::{CommandError, CommandMetadata, Committed, TenantCommands};
use coverwatch_domain::clock::Clock;
use coverwatch_domain::plans::PlanCatalog;
use coverwatch_domain::subscription::{SubscriptionCommand, SubscriptionError};
use coverwatch_projections::Progress;
use sqlx::PgPool;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub tenants: Arc<TenantCommands>,
    pub billing: Arc<Billing>,
    pub cloud_accounts: Arc<coverwatch_commands::CloudAccountsCommands>,
    pub cloud_organizations: Arc<coverwatch_commands::CloudOrganizationCommands>,
    pub detections: Arc<coverwatch_commands::DetectionCommands>,
    pub discovery: coverwatch_commands::aws::Discovery,
    pub catalog: Arc<PlanCatalog>,
    pub rate_limiter: Arc<crate::usage::RateLimiter>,
    pub progress: Progress,
    pub settings: Arc<Settings>,
    pub clock: Arc<dyn Clock>,
    pub signer: coverwatch_projections::signing::AuditSigner,
    /// The Kafka publisher's counters, when it runs in this process.
    pub publisher: Option<Arc<coverwatch_projections::kafka::PublisherMetrics>>,
}

impl AppState {
    /// Creates the tenant's FREE subscription if it is missing (it is
    /// created right after the tenant; this covers a crash in between).
    pub async fn ensure_subscription(&self, tenant_id: Uuid) -> Result<(), CommandError> {
        if self.billing.load(tenant_id).await?.tenant_id.is_some() {
            return Ok(());
        }
        let create = SubscriptionCommand::Create { tenant_id };
        match self
            .billing
            .subscriptions
            .execute(tenant_id, create, &CommandMetadata::system(tenant_id))
            .await
        {
            Ok(committed) => {
                self.settle(committed).await;
                Ok(())
            }
            Err(CommandError::Conflict | CommandError::Subscription(SubscriptionError::AlreadyExists)) => Ok(()),
            Err(other) => Err(other),
        }
    }

    /// Read-your-writes: wait until the read models show a commit, so the
    /// caller's next query sees it (bounded by `consistency_wait_ms`).
    pub async fn settle(&self, committed: Committed) {
        let wait = Duration::from_millis(self.settings.consistency_wait_ms);
        if !self.progress.wait_for(committed.position, wait).await {
            tracing::warn!(position = committed.position, "read models did not catch up in time");
        }
    }
}
