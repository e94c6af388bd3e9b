//! What every handler shares: the application services, the workflows the
//! API starts, the read models' pool for queries, and the wait for them.

use crate::error::{ApiError, ApiResult};
use crate::rate_limit::TenantLimits;
use crate::settings::Settings;
use coverwatch_commands::services::{
    BillingService, CloudAccountService, CloudOrganizationService, DetectionService, TenantService,
};
use coverwatch_commands::workflows::{ConnectMembers, DiscoveryWorkflow};
use coverwatch_commands::{Committed, ReadModels};
use coverwatch_domain::clock::Clock;
use coverwatch_domain::plans::PlanCatalog;
use coverwatch_projections::runtime::CheckpointStatus;
use sqlx::PgPool;
use std::sync::Arc;

#[derive(Clone)]
pub struct AppState {
    /// For read-model queries (and the API's own stores: idempotency keys,
    /// the request meter).
    pub pool: PgPool,
    pub tenants: Arc<TenantService>,
    pub billing: Arc<BillingService>,
    pub cloud_accounts: Arc<CloudAccountService>,
    pub cloud_organizations: Arc<CloudOrganizationService>,
    pub detections: Arc<DetectionService>,
    pub discovery: Arc<DiscoveryWorkflow>,
    pub scans: Arc<coverwatch_commands::workflows::ScanWorkflow>,
    pub connect_members: Arc<ConnectMembers>,
    pub catalog: Arc<PlanCatalog>,
    pub tenant_limits: Arc<TenantLimits>,
    pub read_models: ReadModels,
    pub settings: Arc<Settings>,
    pub clock: Arc<dyn Clock>,
    pub signer: coverwatch_projections::signing::AuditSigner,
    /// The Kafka publisher's counters, when it runs in this process.
    pub publisher: Option<Arc<coverwatch_projections::kafka::PublisherMetrics>>,
    /// Subscriber checkpoints and lag, read at most once a second however
    /// often probes and scrapers ask.
    pub checkpoints: Arc<CheckpointCache>,
    /// Long reads' own pool and per-tenant bound.
    pub streaming: Arc<crate::streaming::Streaming>,
}

/// The last read of the subscribers' checkpoints and when it was made.
#[derive(Default)]
pub struct CheckpointCache {
    last: tokio::sync::Mutex<Option<(std::time::Instant, Vec<CheckpointStatus>)>>,
}

impl CheckpointCache {
    const FRESH_FOR: std::time::Duration = std::time::Duration::from_secs(1);

    pub async fn read(&self, pool: &PgPool) -> sqlx::Result<Vec<CheckpointStatus>> {
        let mut last = self.last.lock().await;
        if let Some((at, rows)) = last.as_ref()
            && at.elapsed() < Self::FRESH_FOR
        {
            return Ok(rows.clone());
        }
        let rows = coverwatch_projections::runtime::checkpoints(pool).await?;
        *last = Some((std::time::Instant::now(), rows.clone()));
        Ok(rows)
    }
}

impl AppState {
    /// Read-your-writes: wait until the read models show a commit, so the
    /// caller's next query sees it (bounded by `http.consistency_wait_ms`).
    /// For commands whose answer does not come from a read model.
    pub async fn settle(&self, committed: Committed) {
        self.read_models.settle(committed).await;
    }

    /// The same, for a command whose answer is read back from a read model:
    /// when the read models have not shown the commit in time (a long
    /// transaction elsewhere holds the horizon), the write is still
    /// committed, so the answer is 202 with the resource's `Location` to
    /// poll, never an error or a stale view.
    pub async fn settle_or_accepted(&self, committed: Committed, location: impl Into<String>) -> ApiResult<()> {
        if self.read_models.settle(committed).await {
            Ok(())
        } else {
            Err(ApiError::Accepted {
                location: location.into(),
                position: committed.position,
            })
        }
    }
}
