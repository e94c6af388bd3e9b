//! The scheduled upkeep loop: every interval it records the subscription
//! transitions that fell due (period ends, grace ends: entitlements already
//! follow the clock; this puts the transition in the log), then keeps the
//! coverage history (a daily snapshot of every account and organization
//! whose last one is a day old, and pruning past each tenant's retention,
//! from its tier), then prunes metered API requests past the longest period
//! usage is reported over, the rate limits' ended windows and idempotency
//! keys past their 24 hours, and starts the scans and re-discoveries the
//! plans schedule. Commands do not wait for it.

use crate::services::BillingService;
use anyhow::Context;
use chrono::{DateTime, Duration as Days, Utc};
use coverwatch_projections::coverage::snapshots;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// What the schedule starts besides the upkeep: scans and re-discoveries
/// at each tenant's plan interval.
pub struct Scheduled {
    pub scans: Arc<super::ScanWorkflow>,
    pub discoveries: Arc<super::DiscoveryWorkflow>,
}

/// Runs until `stop` turns true; `scheduled` starts the scans and
/// re-discoveries the schedule calls for, when this process schedules them.
pub async fn run(
    billing: Arc<BillingService>,
    scheduled: Option<Arc<Scheduled>>,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let now = billing.clock.now();
        if let Err(error) = billing.settle_due(now).await {
            tracing::warn!(error = ?error, "settling due subscriptions failed");
        }
        if let Err(error) = maintain_coverage_history(&billing, now).await {
            tracing::warn!(error = ?error, "coverage history upkeep failed");
        }
        if let Err(error) = coverwatch_projections::billing::usage::prune_requests(&billing.pool, now).await {
            tracing::warn!(error = ?error, "pruning metered requests failed");
        }
        if let Err(error) = crate::idempotency::purge_expired(&billing.pool).await {
            tracing::warn!(error = ?error, "purging idempotency keys failed");
        }
        if let Some(scheduled) = &scheduled {
            // Re-discovery first: a scan then sees the accounts it found.
            if let Err(error) = scheduled.discoveries.discover_due(now).await {
                tracing::warn!(error = ?error, "starting scheduled discoveries failed");
            }
            if let Err(error) = scheduled.scans.scan_due(now).await {
                tracing::warn!(error = ?error, "starting scheduled scans failed");
            }
        }
        if let Err(error) = crate::rate_limits::prune(&billing.pool, now).await {
            tracing::warn!(error = ?error, "pruning rate-limit counters failed");
        }
    }
}

/// Daily snapshots, then pruning by each tenant's history retention. The
/// event log is never pruned: this is a read model's history.
pub async fn maintain_coverage_history(billing: &BillingService, now: DateTime<Utc>) -> anyhow::Result<()> {
    let pool = &billing.pool;
    let version = &coverwatch_domain::attack::latest().attack_version;
    snapshots::take_daily(pool, now, version)
        .await
        .context("daily coverage snapshots")?;
    for tenant_id in snapshots::tenants_with_history(pool).await? {
        let days = billing.entitlements(tenant_id).await?.history_retention_days;
        snapshots::prune(pool, tenant_id, now - Days::days(i64::from(days)))
            .await
            .context("pruning coverage snapshots")?;
    }
    Ok(())
}
