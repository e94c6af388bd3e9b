//! The Subscription's state as folded from its events, and the entitlements
//! it grants at an instant (the same function answers queries and decides
//! limits, so a period end takes effect the moment it passes, before the
//! `Settle` command records it).

use super::events::{ScheduledChange, StripeSubscriptionState, SubscriptionEvent};
use crate::ids::TenantId;
use crate::plans::{BillingCycle, Entitlements, Overrides, PlanCatalog, Tier};
use chrono::{DateTime, Datelike, Duration, Months, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

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
    /// `created` of the newest Stripe fact about a subscription applied.
    pub stripe_as_of: Option<DateTime<Utc>>,
    /// What Stripe reported of each subscription of the customer: its
    /// newest state and its end. The Stripe side of the state is derived
    /// from these (`derive_stripe`), so it is the same whatever the order
    /// the reports arrived in.
    #[serde(default)]
    pub stripe_reports: BTreeMap<String, SubscriptionReport>,
    /// The newest report of each invoice of the customer.
    #[serde(default)]
    pub invoice_reports: BTreeMap<String, InvoiceReport>,
    /// The subscription state adopted last (re-adopted only when another
    /// becomes the newest, so local changes since are kept).
    #[serde(default)]
    pub adopted: Option<(String, Rank)>,
    /// Subscriptions Stripe ended: never revived by a late update.
    pub ended_subscriptions: BTreeSet<String>,
    /// Every Stripe event id already handled (redeliveries are no-ops).
    pub stripe_events: BTreeSet<String>,
    /// `metric/threshold/period_start` keys already recorded.
    pub thresholds: BTreeSet<String>,
}

/// Orders Stripe's reports of one object: `created` (whole seconds), then
/// the later stage of its life, then the event id. Every delivery order of
/// the same reports therefore picks the same newest one.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Rank {
    pub created: DateTime<Utc>,
    pub stage: u8,
    pub event_id: String,
}

impl Rank {
    /// A subscription report: on the same second, a later status wins.
    pub fn subscription(created: DateTime<Utc>, status: SubscriptionStatus, event_id: &str) -> Self {
        let stage = match status {
            SubscriptionStatus::Trialing => 1,
            SubscriptionStatus::Active | SubscriptionStatus::Paused => 2,
            SubscriptionStatus::PastDue => 3,
            SubscriptionStatus::Cancelled => 4,
        };
        Self {
            created,
            stage,
            event_id: event_id.to_owned(),
        }
    }

    /// An invoice report: on the same second, paid wins (a payment is final).
    pub fn invoice(created: DateTime<Utc>, paid: bool, event_id: &str) -> Self {
        Self {
            created,
            stage: u8::from(paid) + 1,
            event_id: event_id.to_owned(),
        }
    }
}

/// The newest report of one Stripe subscription, and when it ended.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SubscriptionReport {
    pub state: Option<(Rank, StripeSubscriptionState)>,
    pub ended_at: Option<DateTime<Utc>>,
}

/// The newest report of one invoice: paid, or a payment that failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceReport {
    pub rank: Rank,
    pub subscription_id: Option<String>,
    pub paid: bool,
}

pub fn threshold_key(metric: &str, threshold: u8, period_start: DateTime<Utc>) -> String {
    format!("{metric}/{threshold}/{}", period_start.timestamp())
}

impl Subscription {
    /// The paid subscription is over: FREE, and nothing of its period is
    /// kept (so the state is the same whether or not its states were seen).
    pub(super) fn end_paid_period(&mut self) {
        self.tier = Tier::Free;
        self.status = SubscriptionStatus::Cancelled;
        self.cycle = None;
        self.cancel_at_period_end = false;
        self.scheduled_change = None;
        self.stripe_subscription_id = None;
        self.amount_cents = None;
        self.past_due_since = None;
        self.current_period_start = None;
        self.current_period_end = None;
        self.trial_end = None;
        self.adopted = None;
    }

    /// The Stripe side of the state, from the reports: the newest state of
    /// the newest subscription that has not ended, with payments reported
    /// since (a failed one makes it past due, a paid one recovers it);
    /// FREE and cancelled once every subscription reported has ended.
    pub(super) fn derive_stripe(&mut self) {
        let current = self
            .stripe_reports
            .iter()
            .filter(|(_, report)| report.ended_at.is_none())
            .filter_map(|(id, report)| report.state.as_ref().map(|(rank, state)| (rank, id, state)))
            .max_by(|a, b| a.0.cmp(b.0))
            .map(|(rank, id, state)| (rank.clone(), id.clone(), state.clone()));
        let Some((rank, id, state)) = current else {
            if self.stripe_reports.values().any(|report| report.ended_at.is_some()) {
                self.end_paid_period();
            }
            return;
        };
        let adopted = Some((id.clone(), rank.clone()));
        if self.adopted != adopted {
            self.adopt(&state);
            self.adopted = adopted;
        }
        let invoices: Vec<&InvoiceReport> = self
            .invoice_reports
            .values()
            .filter(|invoice| invoice.subscription_id.as_deref() == Some(id.as_str()))
            .collect();
        let since_state = invoices
            .iter()
            .filter(|invoice| invoice.rank.created >= rank.created)
            .max_by(|a, b| a.rank.cmp(&b.rank));
        self.status = match since_state {
            Some(invoice) if !invoice.paid => SubscriptionStatus::PastDue,
            Some(_) if state.status == SubscriptionStatus::PastDue => SubscriptionStatus::Active,
            _ => state.status,
        };
        self.past_due_since = if self.status == SubscriptionStatus::PastDue {
            let state_since = (state.status == SubscriptionStatus::PastDue).then_some(rank.created);
            invoices
                .iter()
                .filter(|invoice| !invoice.paid)
                .map(|invoice| invoice.rank.created)
                .chain(state_since)
                .min()
        } else {
            None
        };
    }

    /// Takes a Stripe subscription state as the tenant's.
    fn adopt(&mut self, state: &StripeSubscriptionState) {
        if self.stripe_subscription_id.as_ref() != Some(&state.subscription_id) {
            // A new paid subscription replaces any legacy arrangement.
            self.legacy = None;
            self.scheduled_change = None;
        }
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
        self.status = state.status;
        self.stripe_customer_id = Some(state.customer_id.clone());
        self.stripe_subscription_id = Some(state.subscription_id.clone());
        self.amount_cents = state.amount_cents.or(self.amount_cents);
        self.current_period_start = state.current_period_start;
        self.current_period_end = state.current_period_end;
        self.cancel_at_period_end = state.cancel_at_period_end;
        self.trial_end = state.trial_end;
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
                stripe_event_id,
                stripe_event_created,
                state,
                ..
            } => {
                let rank = Rank::subscription(stripe_event_created, state.status, &stripe_event_id);
                self.stripe_as_of = self.stripe_as_of.max(Some(stripe_event_created));
                let report = self.stripe_reports.entry(state.subscription_id.clone()).or_default();
                if report.state.as_ref().is_none_or(|(newest, _)| *newest < rank) {
                    report.state = Some((rank, state));
                }
                self.derive_stripe();
            }
            SubscriptionEvent::StripeSubscriptionEnded {
                stripe_event_created,
                subscription_id,
                ..
            } => {
                self.stripe_as_of = self.stripe_as_of.max(Some(stripe_event_created));
                self.ended_subscriptions.insert(subscription_id.clone());
                let report = self.stripe_reports.entry(subscription_id).or_default();
                report.ended_at = Some(stripe_event_created);
                self.derive_stripe();
            }
            SubscriptionEvent::TrialEndingNotified { trial_end, .. } => {
                self.trial_end = trial_end.or(self.trial_end);
            }
            SubscriptionEvent::InvoiceRecorded {
                stripe_event_id,
                stripe_event_created,
                invoice,
                ..
            } => {
                // Events recorded before reports were kept carry no time:
                // their effect came with PaymentFailed / PaymentRecovered.
                if let Some(created) = stripe_event_created {
                    let paid = invoice.status == "paid";
                    let rank = Rank::invoice(created, paid, &stripe_event_id);
                    if self
                        .invoice_reports
                        .get(&invoice.invoice_id)
                        .is_none_or(|newest| newest.rank < rank)
                    {
                        self.invoice_reports.insert(
                            invoice.invoice_id,
                            InvoiceReport {
                                rank,
                                subscription_id: invoice.subscription_id,
                                paid,
                            },
                        );
                    }
                    self.derive_stripe();
                }
            }
            SubscriptionEvent::StripeEventIgnored { .. } => {}
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
            SubscriptionEvent::CancellationTookEffect { .. } => {
                // The subscription is over here: no later report revives it.
                if let Some(id) = self.stripe_subscription_id.clone() {
                    let ended_at = self.current_period_end.unwrap_or(DateTime::<Utc>::MIN_UTC);
                    self.stripe_reports.entry(id).or_default().ended_at = Some(ended_at);
                }
                self.end_paid_period();
            }
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
