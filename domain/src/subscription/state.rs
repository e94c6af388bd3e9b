//! The Subscription's state as folded from its events, and the entitlements
//! it grants at an instant (the same function answers queries and decides
//! limits, so a period end takes effect the moment it passes, before the
//! `Settle` command records it).

use super::events::{ScheduledChange, SubscriptionEvent};
use crate::ids::TenantId;
use crate::plans::{BillingCycle, Entitlements, Overrides, PlanCatalog, Tier};
use chrono::{DateTime, Datelike, Duration, Months, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LegacyGrace {
    pub from: Tier,
    pub grace_until: DateTime<Utc>,
    pub fallback: Option<Tier>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Subscription {
    pub version: u64,
    pub tenant_id: Option<TenantId>,
    pub tier: Tier,
    pub status: SubscriptionStatus,
    pub cycle: Option<BillingCycle>,
    pub stripe_customer_id: Option<String>,
    pub stripe_subscription_id: Option<String>,
    pub amount_cents: Option<u64>,
    pub current_period_start: Option<DateTime<Utc>>,
    pub current_period_end: Option<DateTime<Utc>>,
    pub cancel_at_period_end: bool,
    pub trial_end: Option<DateTime<Utc>>,
    pub scheduled_change: Option<ScheduledChange>,
    pub legacy: Option<LegacyGrace>,
    pub past_due_since: Option<DateTime<Utc>>,
    pub grace_until: Option<DateTime<Utc>>,
    pub overrides: Overrides,
    /// `created` of the newest Stripe subscription state adopted.
    pub stripe_as_of: Option<DateTime<Utc>>,
    /// Subscriptions Stripe ended: never revived by a late update.
    pub ended_subscriptions: BTreeSet<String>,
    /// Every Stripe event id already handled (redeliveries are no-ops).
    pub stripe_events: BTreeSet<String>,
    /// `metric/threshold/period_start` keys already recorded.
    pub thresholds: BTreeSet<String>,
}

pub fn threshold_key(metric: &str, threshold: u8, period_start: DateTime<Utc>) -> String {
    format!("{metric}/{threshold}/{}", period_start.timestamp())
}

impl Subscription {
    pub(super) fn end_paid_period(&mut self) {
        self.tier = Tier::Free;
        self.status = SubscriptionStatus::Cancelled;
        self.cycle = None;
        self.cancel_at_period_end = false;
        self.scheduled_change = None;
        self.stripe_subscription_id = None;
        self.amount_cents = None;
        self.past_due_since = None;
    }

    /// A Stripe subscription that is paying (or being retried).
    pub fn has_paid_subscription(&self) -> bool {
        self.stripe_subscription_id.is_some()
            && matches!(
                self.status,
                SubscriptionStatus::Active | SubscriptionStatus::Trialing | SubscriptionStatus::PastDue
            )
    }

    /// The tier whose entitlements hold at `now`, with every due transition
    /// taken into account whether or not it has been recorded yet.
    pub fn effective_tier(&self, now: DateTime<Utc>, catalog: &PlanCatalog) -> Tier {
        if let Some(legacy) = &self.legacy {
            return if now < legacy.grace_until {
                legacy.from
            } else {
                legacy.fallback.unwrap_or(Tier::Free)
            };
        }
        let grace = self.grace_until.is_some_and(|until| now < until);
        match self.status {
            SubscriptionStatus::Cancelled | SubscriptionStatus::Paused if !grace => return Tier::Free,
            SubscriptionStatus::PastDue if !grace => {
                let retrying_until = self
                    .past_due_since
                    .map(|since| since + Duration::days(i64::from(catalog.past_due_grace_days)));
                if retrying_until.is_none_or(|until| now >= until) {
                    return Tier::Free;
                }
            }
            _ => {}
        }
        if self.cancel_at_period_end && self.current_period_end.is_some_and(|end| end <= now) {
            return Tier::Free;
        }
        match self.scheduled_change {
            Some(change) if change.effective_at <= now => change.to_tier,
            _ => self.tier,
        }
    }

    pub fn entitlements(&self, now: DateTime<Utc>, catalog: &PlanCatalog) -> Entitlements {
        self.overrides
            .apply(catalog.plan(self.effective_tier(now, catalog)).entitlements())
    }

    /// The billing period usage is metered in: Stripe's current period while
    /// it runs, otherwise the calendar month (UTC).
    pub fn usage_period(&self, now: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
        if let (Some(start), Some(end)) = (self.current_period_start, self.current_period_end)
            && start <= now
            && now < end
            && self.has_paid_subscription()
        {
            return (start, end);
        }
        let start = Utc
            .with_ymd_and_hms(now.year(), now.month(), 1, 0, 0, 0)
            .single()
            .expect("the first of a month exists");
        (start, start + Months::new(1))
    }

    /// When the next time-driven transition falls due, for the sweeper.
    pub fn next_transition_at(&self) -> Option<DateTime<Utc>> {
        let legacy = self.legacy.as_ref().map(|legacy| legacy.grace_until);
        let cancel = self.current_period_end.filter(|_| self.cancel_at_period_end);
        let scheduled = self.scheduled_change.map(|change| change.effective_at);
        [legacy, cancel, scheduled].into_iter().flatten().min()
    }

    /// Folds one event (the aggregate's `apply`).
    pub(super) fn fold(&mut self, event: SubscriptionEvent) {
        self.version += 1;
        if let Some(id) = event.stripe_event_id() {
            self.stripe_events.insert(id.to_owned());
        }
        match event {
            SubscriptionEvent::SubscriptionCreated {
                tenant_id,
                tier,
                status,
            } => {
                self.tenant_id = Some(tenant_id);
                self.tier = tier;
                self.status = status;
            }
            SubscriptionEvent::CheckoutStarted { customer_id, .. } => self.stripe_customer_id = Some(customer_id),
            SubscriptionEvent::StripeCustomerLinked { customer_id } => self.stripe_customer_id = Some(customer_id),
            SubscriptionEvent::StripeSubscriptionSynced {
                stripe_event_created,
                state,
                ..
            } => {
                if self.stripe_subscription_id.as_ref() != Some(&state.subscription_id) {
                    // A new paid subscription replaces any legacy arrangement.
                    self.legacy = None;
                    self.scheduled_change = None;
                }
                self.stripe_as_of = Some(stripe_event_created);
                if let Some((tier, cycle)) = state.plan {
                    let waiting = self.scheduled_change.is_some_and(|change| {
                        change.to_tier == tier
                            && state
                                .current_period_start
                                .is_none_or(|start| start < change.effective_at)
                    });
                    // A scheduled downgrade moves Stripe to the lower price at
                    // once (for the next invoice); the tier waits for period end.
                    if !waiting {
                        self.tier = tier;
                        self.cycle = Some(cycle);
                        self.scheduled_change = None;
                    }
                }
                if state.status != SubscriptionStatus::PastDue {
                    self.past_due_since = None;
                } else if self.past_due_since.is_none() {
                    self.past_due_since = Some(stripe_event_created);
                }
                self.status = state.status;
                self.stripe_customer_id = Some(state.customer_id);
                self.stripe_subscription_id = Some(state.subscription_id);
                self.amount_cents = state.amount_cents.or(self.amount_cents);
                self.current_period_start = state.current_period_start;
                self.current_period_end = state.current_period_end;
                self.cancel_at_period_end = state.cancel_at_period_end;
                self.trial_end = state.trial_end;
            }
            SubscriptionEvent::StripeSubscriptionEnded {
                stripe_event_created,
                subscription_id,
                ..
            } => {
                self.stripe_as_of = Some(stripe_event_created);
                self.ended_subscriptions.insert(subscription_id);
                self.end_paid_period();
            }
            SubscriptionEvent::TrialEndingNotified { trial_end, .. } => {
                self.trial_end = trial_end.or(self.trial_end);
            }
            SubscriptionEvent::InvoiceRecorded { .. } | SubscriptionEvent::StripeEventIgnored { .. } => {}
            SubscriptionEvent::PaymentFailed { at, .. } => {
                self.status = SubscriptionStatus::PastDue;
                self.past_due_since.get_or_insert(at);
            }
            SubscriptionEvent::PaymentRecovered { .. } => {
                self.status = SubscriptionStatus::Active;
                self.past_due_since = None;
            }
            SubscriptionEvent::PlanUpgraded { to, cycle, .. } => {
                self.tier = to;
                self.cycle = Some(cycle);
                self.scheduled_change = None;
            }
            SubscriptionEvent::DowngradeScheduled { change } => self.scheduled_change = Some(change),
            SubscriptionEvent::ScheduledChangeTookEffect { change, .. } => {
                self.tier = change.to_tier;
                self.cycle = change.cycle.or(self.cycle);
                self.scheduled_change = None;
            }
            SubscriptionEvent::CancellationScheduled { .. } => self.cancel_at_period_end = true,
            SubscriptionEvent::CancellationWithdrawn {} => self.cancel_at_period_end = false,
            SubscriptionEvent::CancellationTookEffect { .. } => self.end_paid_period(),
            SubscriptionEvent::OverridesSet { overrides } => self.overrides = overrides,
            SubscriptionEvent::GracePeriodGranted { until, .. } => self.grace_until = Some(until),
            SubscriptionEvent::LegacyTierMigrated { from, grace_until } => {
                self.tier = from;
                self.status = SubscriptionStatus::Active;
                self.legacy = Some(LegacyGrace {
                    from,
                    grace_until,
                    fallback: None,
                });
            }
            SubscriptionEvent::LegacyFallbackChosen { tier } => {
                if let Some(legacy) = self.legacy.as_mut() {
                    legacy.fallback = Some(tier);
                }
            }
            SubscriptionEvent::LegacyGraceEnded { to } => {
                self.legacy = None;
                self.tier = to;
            }
            SubscriptionEvent::UsageThresholdCrossed {
                metric,
                threshold,
                period_start,
                ..
            } => {
                self.thresholds.insert(threshold_key(&metric, threshold, period_start));
            }
        }
    }

    pub(super) fn paid_subscription_id(&self) -> Option<String> {
        self.stripe_subscription_id
            .clone()
            .filter(|_| self.has_paid_subscription())
    }
}
