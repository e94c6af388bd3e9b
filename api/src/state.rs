//! What every handler shares.

use crate::settings::Settings;
use coverwatch_commands::{Committed, TenantCommands};
use coverwatch_domain::clock::Clock;
use coverwatch_projections::Progress;
use sqlx::PgPool;
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub tenants: Arc<TenantCommands>,
    pub progress: Progress,
    pub settings: Arc<Settings>,
    pub clock: Arc<dyn Clock>,
    pub signer: coverwatch_projections::signing::AuditSigner,
    /// The Kafka publisher's counters, when it runs in this process.
    pub publisher: Option<Arc<coverwatch_projections::kafka::PublisherMetrics>>,
}

impl AppState {
    /// Read-your-writes: wait until the read models show a commit, so the
    /// caller's next query sees it (bounded by `consistency_wait_ms`).
    pub async fn settle(&self, committed: Committed) {
        let wait = Duration::from_millis(self.settings.consistency_wait_ms);
        if !self.progress.wait_for(committed.position, wait).await {
            tracing::warn!(position = committed.position, "read models did not catch up in time");
        }
    }
}
