//! The Subscription aggregate's commands, events and errors. Stripe's data
//! reaches the aggregate already parsed into [`StripeChange`]; prices are
//! resolved to tiers by the application layer through the plan catalog.

use crate::plans::{BillingCycle, Limit, Overrides, Tier};
use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubscriptionStatus {
    Trialing,
    #[default]
    Active,
    PastDue,
    Cancelled,
    Paused,
}

impl SubscriptionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Trialing => "trialing",
            Self::Active => "active",
            Self::PastDue => "past_due",
            Self::Cancelled => "cancelled",
            Self::Paused => "paused",
        }
    }

    /// Stripe's subscription statuses, folded onto Coverwatch's five.
    pub fn from_stripe(status: &str) -> Option<Self> {
        Some(match status {
            "trialing" => Self::Trialing,
            "active" => Self::Active,
            "past_due" | "unpaid" | "incomplete" => Self::PastDue,
            "canceled" | "incomplete_expired" => Self::Cancelled,
            "paused" => Self::Paused,
            _ => return None,
        })
    }

    pub fn parse(input: &str) -> Option<Self> {
        [
            Self::Trialing,
            Self::Active,
            Self::PastDue,
            Self::Cancelled,
            Self::Paused,
        ]
        .into_iter()
        .find(|status| status.as_str() == input)
    }
}

/// The subscription as one Stripe object described it at `event_created`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StripeSubscriptionState {
    pub subscription_id: String,
    pub customer_id: String,
    pub status: SubscriptionStatus,
    /// `None` when the price is not in the catalog (kept as it was).
    pub plan: Option<(Tier, BillingCycle)>,
    /// What Stripe charges per cycle, in cents (MRR for custom prices).
    pub amount_cents: Option<u64>,
    pub current_period_start: Option<DateTime<Utc>>,
    pub current_period_end: Option<DateTime<Utc>>,
    pub cancel_at_period_end: bool,
    pub trial_end: Option<DateTime<Utc>>,
}

/// An invoice as Stripe reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceRecord {
    pub invoice_id: String,
    pub number: Option<String>,
    pub subscription_id: Option<String>,
    pub status: String,
    pub currency: String,
    pub amount_due_cents: i64,
    pub amount_paid_cents: i64,
    pub hosted_invoice_url: Option<String>,
    pub invoice_pdf: Option<String>,
    pub period_start: Option<DateTime<Utc>>,
    pub period_end: Option<DateTime<Utc>>,
}

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
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum SubscriptionCommand {
    /// Every tenant starts on FREE, active.
    Create {
        tenant_id: Uuid,
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

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubscriptionError {
    #[error("the subscription already exists")]
    AlreadyExists,
    #[error("subscription not found")]
    NotFound,
    #[error("{0}")]
    Rule(String),
    #[error("{0}")]
    Conflict(String),
    /// A downgrade that would leave the tenant above the target tier's limit.
    #[error("{metric}: {used} in use, the {tier} tier allows {limit}")]
    OverTargetLimit {
        metric: &'static str,
        used: u64,
        limit: u64,
        tier: Tier,
    },
    #[error("billing is not configured on this server")]
    BillingNotConfigured,
    #[error("Stripe refused the change: {0}")]
    Gateway(String),
}

/// A change of tier that waits for a moment (period end, grace end).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduledChange {
    pub to_tier: Tier,
    pub cycle: Option<BillingCycle>,
    pub effective_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SubscriptionEvent {
    SubscriptionCreated {
        tenant_id: Uuid,
        tier: Tier,
        status: SubscriptionStatus,
    },
    CheckoutStarted {
        tier: Tier,
        cycle: BillingCycle,
        session_id: String,
        customer_id: String,
    },
    StripeCustomerLinked {
        customer_id: String,
    },
    /// Stripe's view of the subscription was adopted (checkout completed,
    /// created or updated). Carries the whole state it adopted.
    StripeSubscriptionSynced {
        stripe_event_id: String,
        stripe_event_type: String,
        stripe_event_created: DateTime<Utc>,
        state: StripeSubscriptionState,
    },
    StripeSubscriptionEnded {
        stripe_event_id: String,
        stripe_event_created: DateTime<Utc>,
        subscription_id: String,
    },
    TrialEndingNotified {
        stripe_event_id: String,
        trial_end: Option<DateTime<Utc>>,
    },
    InvoiceRecorded {
        stripe_event_id: String,
        stripe_event_type: String,
        invoice: InvoiceRecord,
    },
    PaymentFailed {
        stripe_event_id: String,
        at: DateTime<Utc>,
    },
    PaymentRecovered {
        stripe_event_id: String,
    },
    /// Recorded so a redelivered or stale event is recognised as handled.
    StripeEventIgnored {
        stripe_event_id: String,
        stripe_event_type: String,
        reason: String,
    },
    PlanUpgraded {
        from: Tier,
        to: Tier,
        cycle: BillingCycle,
    },
    DowngradeScheduled {
        change: ScheduledChange,
    },
    ScheduledChangeTookEffect {
        from: Tier,
        change: ScheduledChange,
    },
    CancellationScheduled {
        effective_at: DateTime<Utc>,
    },
    CancellationWithdrawn {},
    /// The paid period ran out after a cancellation: the tenant is on FREE.
    CancellationTookEffect {
        from: Tier,
    },
    OverridesSet {
        overrides: Overrides,
    },
    GracePeriodGranted {
        until: DateTime<Utc>,
        reason: String,
    },
    LegacyTierMigrated {
        from: Tier,
        grace_until: DateTime<Utc>,
    },
    LegacyFallbackChosen {
        tier: Tier,
    },
    LegacyGraceEnded {
        to: Tier,
    },
    UsageThresholdCrossed {
        metric: String,
        threshold: u8,
        used: u64,
        limit: u64,
        period_start: DateTime<Utc>,
    },
}

impl SubscriptionEvent {
    pub fn name(&self) -> &'static str {
        match self {
            Self::SubscriptionCreated { .. } => "SubscriptionCreated",
            Self::CheckoutStarted { .. } => "CheckoutStarted",
            Self::StripeCustomerLinked { .. } => "StripeCustomerLinked",
            Self::StripeSubscriptionSynced { .. } => "StripeSubscriptionSynced",
            Self::StripeSubscriptionEnded { .. } => "StripeSubscriptionEnded",
            Self::TrialEndingNotified { .. } => "TrialEndingNotified",
            Self::InvoiceRecorded { .. } => "InvoiceRecorded",
            Self::PaymentFailed { .. } => "PaymentFailed",
            Self::PaymentRecovered { .. } => "PaymentRecovered",
            Self::StripeEventIgnored { .. } => "StripeEventIgnored",
            Self::PlanUpgraded { .. } => "PlanUpgraded",
            Self::DowngradeScheduled { .. } => "DowngradeScheduled",
            Self::ScheduledChangeTookEffect { .. } => "ScheduledChangeTookEffect",
            Self::CancellationScheduled { .. } => "CancellationScheduled",
            Self::CancellationWithdrawn { .. } => "CancellationWithdrawn",
            Self::CancellationTookEffect { .. } => "CancellationTookEffect",
            Self::OverridesSet { .. } => "OverridesSet",
            Self::GracePeriodGranted { .. } => "GracePeriodGranted",
            Self::LegacyTierMigrated { .. } => "LegacyTierMigrated",
            Self::LegacyFallbackChosen { .. } => "LegacyFallbackChosen",
            Self::LegacyGraceEnded { .. } => "LegacyGraceEnded",
            Self::UsageThresholdCrossed { .. } => "UsageThresholdCrossed",
        }
    }

    /// The Stripe event this domain event came from, if any.
    pub fn stripe_event_id(&self) -> Option<&str> {
        match self {
            Self::StripeSubscriptionSynced { stripe_event_id, .. }
            | Self::StripeSubscriptionEnded { stripe_event_id, .. }
            | Self::TrialEndingNotified { stripe_event_id, .. }
            | Self::InvoiceRecorded { stripe_event_id, .. }
            | Self::PaymentFailed { stripe_event_id, .. }
            | Self::PaymentRecovered { stripe_event_id }
            | Self::StripeEventIgnored { stripe_event_id, .. } => Some(stripe_event_id),
            _ => None,
        }
    }
}

impl DomainEvent for SubscriptionEvent {
    fn event_type(&self) -> String {
        self.name().to_owned()
    }

    fn event_version(&self) -> String {
        "1.0".to_owned()
    }
}
