//! What happened to a subscription, and the Stripe objects events carry.
//! Every event is at version 1.0 (an upcaster is added beside a new version
//! when one changes).

use super::state::SubscriptionStatus;
use crate::ids::TenantId;
use crate::plans::{BillingCycle, Overrides, Tier};
use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

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
        tenant_id: TenantId,
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
        /// Stripe's `created` of the report (absent in events recorded
        /// before reports were ordered).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stripe_event_created: Option<DateTime<Utc>>,
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
