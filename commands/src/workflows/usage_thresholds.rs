//! The usage threshold watcher: a subscriber of the log that, when a tenant
//! takes a seat (member or pending invitation) or connects an account,
//! records 80 % and 100 % crossings of the plan's limits in the Subscription
//! aggregate, once per billing period (the aggregate refuses a second record
//! of the same one, so a replayed batch records nothing again). It issues
//! commands, so it is never rebuilt; commands wait for it, so a client that
//! just filled the last seat sees the crossing in its next usage read.

use crate::executor::{CloudAccountsCommands, RETRIES, TenantCommands};
use crate::metadata::CommandMetadata;
use crate::services::BillingService;
use async_trait::async_trait;
use coverwatch_domain::ids::TenantId;
use coverwatch_domain::plans::Limit;
use coverwatch_domain::subscription::SubscriptionCommand;
use coverwatch_projections::{StoredEvent, Subscriber};
use sqlx::PgConnection;
use std::collections::BTreeSet;
use std::sync::Arc;

pub struct UsageThresholds {
    pub billing: Arc<BillingService>,
    pub tenants: Arc<TenantCommands>,
    pub cloud_accounts: Arc<CloudAccountsCommands>,
}

/// Tenant events that take a seat.
const SEAT_TAKEN: [&str; 3] = ["TenantCreated", "MemberInvited", "InvitationAccepted"];

impl UsageThresholds {
    /// Records the crossings of the member and account limits at their use now.
    pub async fn check(&self, tenant_id: TenantId) -> anyhow::Result<()> {
        let now = self.billing.clock.now();
        let subscription = self.billing.load(tenant_id).await?;
        if subscription.tenant_id.is_none() {
            return Ok(());
        }
        let entitlements = subscription.entitlements(now, &self.billing.catalog);
        let (period_start, _) = subscription.usage_period(now);
        let members = self.tenants.load(tenant_id).await?.seats_used(now);
        let accounts = self.cloud_accounts.load(tenant_id).await?.connected();
        for (metric, used, limit) in [
            ("members", members, entitlements.max_members),
            ("cloud_accounts", accounts, entitlements.max_accounts),
        ] {
            let Limit::AtMost(limit) = limit else { continue };
            if limit == 0 {
                continue;
            }
            for threshold in [80u8, 100] {
                if used * 100 >= u64::from(threshold) * limit {
                    let command = SubscriptionCommand::RecordUsageThreshold {
                        metric: metric.into(),
                        threshold,
                        used,
                        limit,
                        period_start,
                    };
                    self.billing
                        .subscriptions
                        .execute_retrying(tenant_id, command, &CommandMetadata::system(tenant_id), RETRIES)
                        .await?;
                }
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Subscriber for UsageThresholds {
    fn name(&self) -> &'static str {
        "usage_thresholds"
    }

    fn tables(&self) -> &'static [&'static str] {
        &[]
    }

    /// It issues commands: a rebuild must not run it again.
    fn rebuildable(&self) -> bool {
        false
    }

    fn awaited(&self) -> bool {
        true
    }

    async fn handle(&self, _conn: &mut PgConnection, events: &[StoredEvent]) -> anyhow::Result<()> {
        let taken: BTreeSet<TenantId> = events
            .iter()
            .filter(|e| {
                (e.aggregate_type == "tenant" && SEAT_TAKEN.contains(&e.event_type.as_str()))
                    || (e.aggregate_type == "cloud_accounts" && e.event_type == "CloudAccountConnected")
            })
            .filter_map(|e| e.aggregate_id.parse().ok())
            .collect();
        for tenant_id in taken {
            self.check(tenant_id).await?;
        }
        Ok(())
    }
}
