//! What may be asked of a subscription. Stripe's data reaches the aggregate
//! already parsed into [`StripeChange`]; prices are resolved to tiers by the
//! application layer through the plan catalog.

use super::events::{InvoiceRecord, StripeSubscriptionState};
use crate::ids::TenantId;
use crate::plans::{BillingCycle, Limit, Overrides, Tier};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What one verified Stripe event says, in the aggregate's terms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StripeFact {
    CheckoutCompleted {
        session_id: String,
        customer_id: String,
        subscription: StripeSubscriptionState,
    },
    SubscriptionChanged(StripeSubscriptionState),
    SubscriptionDeleted(StripeSubscriptionState),
    TrialWillEnd {
        subscription_id: String,
        trial_end: Option<DateTime<Utc>>,
    },
    InvoicePaid(InvoiceRecord),
    InvoicePaymentFailed(InvoiceRecord),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StripeChange {
    pub event_id: String,
    pub event_type: String,
    /// Stripe's `created` of the event: orders deliveries that arrive out of order.
    pub event_created: DateTime<Utc>,
    pub fact: StripeFact,
}

/// Current usage of the limited resources, for refusing downgrades that
/// would leave a tenant over its new limits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub accounts: u64,
    pub members: u64,
}

/// An admin's change to overrides: `None` keeps a field, `Some(None)` removes
/// the override, `Some(Some(v))` sets it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OverridesPatch {
    pub max_accounts: Option<Option<Limit>>,
    pub max_members: Option<Option<Limit>>,
    pub history_retention_days: Option<Option<u32>>,
    pub org_features: Option<Option<bool>>,
    pub api_rate_per_minute: Option<Option<u32>>,
    pub scan_interval_hours: Option<Option<u32>>,
}

impl OverridesPatch {
    pub fn apply(&self, current: Overrides) -> Overrides {
        fn pick<T: Copy>(patch: Option<Option<T>>, current: Option<T>) -> Option<T> {
            patch.unwrap_or(current)
        }
        Overrides {
            max_accounts: pick(self.max_accounts, current.max_accounts),
            max_members: pick(self.max_members, current.max_members),
            history_retention_days: pick(self.history_retention_days, current.history_retention_days),
            org_features: pick(self.org_features, current.org_features),
            api_rate_per_minute: pick(self.api_rate_per_minute, current.api_rate_per_minute),
            scan_interval_hours: pick(self.scan_interval_hours, current.scan_interval_hours),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum SubscriptionCommand {
    /// Every tenant starts on FREE, active.
    Create {
        tenant_id: TenantId,
    },
    /// A checkout session was opened at Stripe for this tier and cycle.
    StartCheckout {
        tier: Tier,
        cycle: BillingCycle,
        session_id: String,
        customer_id: String,
    },
    ApplyStripeEvent(StripeChange),
    /// Upgrade now, downgrade at period end; `usage` is what the tenant holds.
    ChangePlan {
        tier: Tier,
        cycle: BillingCycle,
        usage: Usage,
    },
    CancelAtPeriodEnd,
    Reactivate,
    SetOverrides {
        patch: OverridesPatch,
    },
    GrantGracePeriod {
        until: DateTime<Utc>,
        reason: String,
    },
    /// The tenant was on the retired SUBSCRIBER tier of the old product.
    MigrateFromLegacy,
    /// Records the transitions whose time has come (period end, grace end).
    Settle,
    /// Records that usage of a metric crossed a threshold in a billing period.
    RecordUsageThreshold {
        metric: String,
        threshold: u8,
        used: u64,
        limit: u64,
        period_start: DateTime<Utc>,
    },
}
