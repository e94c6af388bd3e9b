//! What every handler shares: the application services, the workflows the
//! API starts, the read models' pool for queries, and the wait for them.

use crate::rate_limit::RateLimiter;
use crate::settings::Settings;
use coverwatch_commands::services::{
    BillingService, CloudAccountService, CloudOrganizationService, DetectionService, TenantService,
};
use coverwatch_commands::workflows::{ConnectMembers, DiscoveryWorkflow};
use coverwatch_commands::{Committed, ReadModels};
use coverwatch_domain::clock::Clock;
use coverwatch_domain::plans::PlanCatalog;
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
    pub connect_members: Arc<ConnectMembers>,
    pub catalog: Arc<PlanCatalog>,
    pub rate_limiter: Arc<RateLimiter>,
    pub read_models: ReadModels,
    pub settings: Arc<Settings>,
    pub clock: Arc<dyn Clock>,
    pub signer: coverwatch_projections::signing::AuditSigner,
    /// The Kafka publisher's counters, when it runs in this process.
    pub publisher: Option<Arc<coverwatch_projections::kafka::PublisherMetrics>>,
}

impl AppState {
    /// Read-your-writes: wait until the read models show a commit, so the
    /// caller's next query sees it (bounded by `http.consistency_wait_ms`).
    pub async fn settle(&self, committed: Committed) {
        self.read_models.settle(committed).await;
    }
}
