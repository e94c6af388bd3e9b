//! The Subscription aggregate's state, its decisions, and the entitlements it
//! grants at a given instant (the same function answers queries and decides
//! limits, so a period end takes effect the moment it passes, before the
//! `Settle` command records it).

use super::model::*;
use crate::clock::{Clock, SystemClock};
use crate::plans::{BillingCycle, Entitlements, Limit, Overrides, PlanCatalog, Tier};
use chrono::{DateTime, Datelike, Duration, Months, TimeZone, Utc};
use cqrs_es::Aggregate;
use cqrs_es::event_sink::EventSink;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::sync::Arc;
use uuid::Uuid;

/// The Stripe calls a decision may need (cqrs-es demo `services.rs` style): the
/// aggregate decides first and calls Stripe only for a change it accepted.
#[async_trait::async_trait]
pub trait BillingGateway: Send + Sync {
    async fn set_cancel_at_period_end(&self, subscription_id: &str, cancel: bool) -> Result<(), String>;
    /// Moves the subscription to another price; `prorate` charges the
    /// difference now (upgrades), otherwise the new price starts next period.
    async fn change_price(&self, subscription_id: &str, price_id: &str, prorate: bool) -> Result<(), String>;
}

pub struct SubscriptionServices {
    pub clock: Arc<dyn Clock>,
    pub catalog: Arc<PlanCatalog>,
    /// `None` when Stripe is not configured.
    pub gateway: Option<Arc<dyn BillingGateway>>,
}

impl Default for SubscriptionServices {
    fn default() -> Self {
        Self {
            clock: Arc::new(SystemClock),
            catalog: Arc::new(PlanCatalog::shipped()),
            gateway: None,
        }
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
    pub tenant_id: Option<Uuid>,
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

type Decision = Result<Vec<SubscriptionEvent>, SubscriptionError>;

/// A Stripe call a decision needs before its events are written.
enum Effect {
    None,
    CancelAtPeriodEnd(String, bool),
    ChangePrice {
        subscription_id: String,
        price_id: String,
        prorate: bool,
    },
}

impl Aggregate for Subscription {
    const TYPE: &'static str = "subscription";
    type Command = SubscriptionCommand;
    type Event = SubscriptionEvent;
    type Error = SubscriptionError;
    type Services = SubscriptionServices;

    async fn handle(
        &mut self,
        command: Self::Command,
        services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let now = services.clock.now();
        let (events, effect) = self.decide(command, now, &services.catalog)?;
        let gateway = || services.gateway.as_ref().ok_or(SubscriptionError::BillingNotConfigured);
        match effect {
            Effect::None => {}
            Effect::CancelAtPeriodEnd(id, cancel) => gateway()?
                .set_cancel_at_period_end(&id, cancel)
                .await
                .map_err(SubscriptionError::Gateway)?,
            Effect::ChangePrice {
                subscription_id,
                price_id,
                prorate,
            } => gateway()?
                .change_price(&subscription_id, &price_id, prorate)
                .await
                .map_err(SubscriptionError::Gateway)?,
        }
        for event in events {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
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
}

pub fn threshold_key(metric: &str, threshold: u8, period_start: DateTime<Utc>) -> String {
    format!("{metric}/{threshold}/{}", period_start.timestamp())
}

impl Subscription {
    fn end_paid_period(&mut self) {
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

    fn decide(
        &self,
        command: SubscriptionCommand,
        now: DateTime<Utc>,
        catalog: &PlanCatalog,
    ) -> Result<(Vec<SubscriptionEvent>, Effect), SubscriptionError> {
        let only = |events: Decision| events.map(|events| (events, Effect::None));
        if let SubscriptionCommand::Create { tenant_id } = command {
            if self.tenant_id.is_some() {
                return Err(SubscriptionError::AlreadyExists);
            }
            return only(Ok(vec![SubscriptionEvent::SubscriptionCreated {
                tenant_id,
                tier: Tier::Free,
                status: SubscriptionStatus::Active,
            }]));
        }
        if self.tenant_id.is_none() {
            return Err(SubscriptionError::NotFound);
        }
        match command {
            SubscriptionCommand::Create { .. } => unreachable!("handled above"),
            SubscriptionCommand::StartCheckout {
                tier,
                cycle,
                session_id,
                customer_id,
            } => only(self.start_checkout(tier, cycle, session_id, customer_id, catalog)),
            SubscriptionCommand::ApplyStripeEvent(change) => only(Ok(self.apply_stripe(change))),
            SubscriptionCommand::ChangePlan { tier, cycle, usage } => {
                self.change_plan(tier, cycle, usage, now, catalog)
            }
            SubscriptionCommand::CancelAtPeriodEnd => {
                let (Some(id), Some(end)) = (self.paid_subscription_id(), self.current_period_end) else {
                    return Err(SubscriptionError::Rule(
                        "there is no paid subscription to cancel".into(),
                    ));
                };
                if self.cancel_at_period_end {
                    return Err(SubscriptionError::Conflict(
                        "the subscription is already cancelled at period end".into(),
                    ));
                }
                Ok((
                    vec![SubscriptionEvent::CancellationScheduled { effective_at: end }],
                    Effect::CancelAtPeriodEnd(id, true),
                ))
            }
            SubscriptionCommand::Reactivate => {
                let Some(id) = self.paid_subscription_id() else {
                    return Err(SubscriptionError::Rule(
                        "there is no paid subscription to reactivate: start a checkout".into(),
                    ));
                };
                if !self.cancel_at_period_end {
                    return Err(SubscriptionError::Conflict(
                        "the subscription is not being cancelled".into(),
                    ));
                }
                if self.current_period_end.is_some_and(|end| end <= now) {
                    return Err(SubscriptionError::Rule(
                        "the period has ended: start a new checkout".into(),
                    ));
                }
                Ok((
                    vec![SubscriptionEvent::CancellationWithdrawn {}],
                    Effect::CancelAtPeriodEnd(id, false),
                ))
            }
            SubscriptionCommand::SetOverrides { patch } => {
                let overrides = patch.apply(self.overrides);
                if overrides == self.overrides {
                    return only(Ok(vec![]));
                }
                only(Ok(vec![SubscriptionEvent::OverridesSet { overrides }]))
            }
            SubscriptionCommand::GrantGracePeriod { until, reason } => {
                let reason = reason.trim().to_owned();
                if until <= now {
                    return Err(SubscriptionError::Rule("a grace period must end in the future".into()));
                }
                if reason.is_empty() || reason.chars().count() > 500 {
                    return Err(SubscriptionError::Rule(
                        "a grace period needs a reason of 1 to 500 characters".into(),
                    ));
                }
                only(Ok(vec![SubscriptionEvent::GracePeriodGranted { until, reason }]))
            }
            SubscriptionCommand::MigrateFromLegacy => {
                if self.legacy.is_some() || self.has_paid_subscription() || self.tier != Tier::Free {
                    return Err(SubscriptionError::Conflict(
                        "only a FREE tenant without a paid subscription can be migrated from the legacy tier".into(),
                    ));
                }
                let grace_until = now + Months::new(catalog.legacy_grace_months);
                only(Ok(vec![SubscriptionEvent::LegacyTierMigrated {
                    from: Tier::Subscriber,
                    grace_until,
                }]))
            }
            SubscriptionCommand::Settle => only(Ok(self.settle(now, catalog))),
            SubscriptionCommand::RecordUsageThreshold {
                metric,
                threshold,
                used,
                limit,
                period_start,
            } => {
                if self
                    .thresholds
                    .contains(&threshold_key(&metric, threshold, period_start))
                {
                    return only(Ok(vec![]));
                }
                only(Ok(vec![SubscriptionEvent::UsageThresholdCrossed {
                    metric,
                    threshold,
                    used,
                    limit,
                    period_start,
                }]))
            }
        }
    }

    fn paid_subscription_id(&self) -> Option<String> {
        self.stripe_subscription_id
            .clone()
            .filter(|_| self.has_paid_subscription())
    }

    fn start_checkout(
        &self,
        tier: Tier,
        cycle: BillingCycle,
        session_id: String,
        customer_id: String,
        catalog: &PlanCatalog,
    ) -> Decision {
        if !catalog.plan(tier).purchasable() {
            return Err(SubscriptionError::Rule(format!("the {tier} tier cannot be bought")));
        }
        if self.has_paid_subscription() {
            return Err(SubscriptionError::Conflict(
                "the tenant already has a paid subscription: change plan instead".into(),
            ));
        }
        let mut events = vec![];
        if self.stripe_customer_id.as_ref() != Some(&customer_id) {
            events.push(SubscriptionEvent::StripeCustomerLinked {
                customer_id: customer_id.clone(),
            });
        }
        events.push(SubscriptionEvent::CheckoutStarted {
            tier,
            cycle,
            session_id,
            customer_id,
        });
        Ok(events)
    }

    fn apply_stripe(&self, change: StripeChange) -> Vec<SubscriptionEvent> {
        let StripeChange {
            event_id,
            event_type,
            event_created,
            fact,
        } = change;
        if self.stripe_events.contains(&event_id) {
            return vec![];
        }
        let ignored = |reason: &str| {
            vec![SubscriptionEvent::StripeEventIgnored {
                stripe_event_id: event_id.clone(),
                stripe_event_type: event_type.clone(),
                reason: reason.to_owned(),
            }]
        };
        // Deliveries can arrive out of order: adopt a subscription state only
        // if it is at least as new as the one adopted last.
        let stale = self.stripe_as_of.is_some_and(|as_of| event_created < as_of);
        match fact {
            StripeFact::CheckoutCompleted { subscription, .. } | StripeFact::SubscriptionChanged(subscription) => {
                if self.ended_subscriptions.contains(&subscription.subscription_id) {
                    return ignored("the subscription has already ended");
                }
                if stale {
                    return ignored("a newer state of the subscription was already applied");
                }
                vec![SubscriptionEvent::StripeSubscriptionSynced {
                    stripe_event_id: event_id,
                    stripe_event_type: event_type,
                    stripe_event_created: event_created,
                    state: subscription,
                }]
            }
            StripeFact::SubscriptionDeleted(subscription) => {
                if self.ended_subscriptions.contains(&subscription.subscription_id) {
                    return ignored("the subscription has already ended");
                }
                if self.stripe_subscription_id.as_ref() != Some(&subscription.subscription_id) {
                    return ignored("not the tenant's current subscription");
                }
                vec![SubscriptionEvent::StripeSubscriptionEnded {
                    stripe_event_id: event_id,
                    stripe_event_created: event_created,
                    subscription_id: subscription.subscription_id,
                }]
            }
            StripeFact::TrialWillEnd { trial_end, .. } => vec![SubscriptionEvent::TrialEndingNotified {
                stripe_event_id: event_id,
                trial_end,
            }],
            StripeFact::InvoicePaid(invoice) => {
                let ours = invoice.subscription_id.is_some() && invoice.subscription_id == self.stripe_subscription_id;
                let recovered = ours && self.status == SubscriptionStatus::PastDue && !stale;
                let mut events = vec![SubscriptionEvent::InvoiceRecorded {
                    stripe_event_id: event_id.clone(),
                    stripe_event_type: event_type,
                    invoice,
                }];
                if recovered {
                    events.push(SubscriptionEvent::PaymentRecovered {
                        stripe_event_id: event_id,
                    });
                }
                events
            }
            StripeFact::InvoicePaymentFailed(invoice) => {
                let ours = invoice.subscription_id.is_some() && invoice.subscription_id == self.stripe_subscription_id;
                let newly_failed = ours && self.status != SubscriptionStatus::PastDue && !stale;
                let mut events = vec![SubscriptionEvent::InvoiceRecorded {
                    stripe_event_id: event_id.clone(),
                    stripe_event_type: event_type,
                    invoice,
                }];
                if newly_failed {
                    events.push(SubscriptionEvent::PaymentFailed {
                        stripe_event_id: event_id,
                        at: event_created,
                    });
                }
                events
            }
        }
    }

    fn change_plan(
        &self,
        tier: Tier,
        cycle: BillingCycle,
        usage: Usage,
        now: DateTime<Utc>,
        catalog: &PlanCatalog,
    ) -> Result<(Vec<SubscriptionEvent>, Effect), SubscriptionError> {
        let target = catalog.plan(tier);
        if target.retired {
            return Err(SubscriptionError::Rule(format!("the {tier} tier is retired")));
        }
        let current = self.effective_tier(now, catalog);
        // A downgrade keeps nothing above the target's limits (the tenant's
        // overrides still apply on top of the target tier).
        let limits = self.overrides.apply(target.entitlements());
        for (metric, used, limit) in [
            ("members", usage.members, limits.max_members),
            ("accounts", usage.accounts, limits.max_accounts),
        ] {
            if let Limit::AtMost(max) = limit
                && used > max
            {
                return Err(SubscriptionError::OverTargetLimit {
                    metric,
                    used,
                    limit: max,
                    tier,
                });
            }
        }
        if let Some(legacy) = &self.legacy {
            if tier != Tier::Free {
                return Err(SubscriptionError::Rule(format!(
                    "buy the {tier} tier through checkout; FREE is the only tier chosen without payment"
                )));
            }
            if legacy.fallback == Some(tier) {
                return Ok((vec![], Effect::None));
            }
            return Ok((vec![SubscriptionEvent::LegacyFallbackChosen { tier }], Effect::None));
        }
        let Some(subscription_id) = self.paid_subscription_id() else {
            return Err(SubscriptionError::Rule(if tier == Tier::Free {
                "the tenant is already on FREE".into()
            } else {
                format!("the tenant has no paid subscription: buy the {tier} tier through checkout")
            }));
        };
        if tier == Tier::Free {
            return Err(SubscriptionError::Rule(
                "to go back to FREE, cancel the subscription at period end".into(),
            ));
        }
        if tier == current && Some(cycle) == self.cycle && self.scheduled_change.is_none() {
            return Ok((vec![], Effect::None));
        }
        let price_id = target
            .stripe_price(cycle)
            .ok_or_else(|| SubscriptionError::Rule(format!("{tier} has no Stripe price")))?
            .to_owned();
        if tier.rank() > current.rank() || (tier == current && Some(cycle) != self.cycle) {
            Ok((
                vec![SubscriptionEvent::PlanUpgraded {
                    from: current,
                    to: tier,
                    cycle,
                }],
                Effect::ChangePrice {
                    subscription_id,
                    price_id,
                    prorate: true,
                },
            ))
        } else {
            let effective_at = self.current_period_end.unwrap_or(now);
            Ok((
                vec![SubscriptionEvent::DowngradeScheduled {
                    change: ScheduledChange {
                        to_tier: tier,
                        cycle: Some(cycle),
                        effective_at,
                    },
                }],
                Effect::ChangePrice {
                    subscription_id,
                    price_id,
                    prorate: false,
                },
            ))
        }
    }

    fn settle(&self, now: DateTime<Utc>, catalog: &PlanCatalog) -> Vec<SubscriptionEvent> {
        let mut events = vec![];
        if let Some(legacy) = &self.legacy
            && legacy.grace_until <= now
        {
            events.push(SubscriptionEvent::LegacyGraceEnded {
                to: legacy.fallback.unwrap_or(Tier::Free),
            });
            return events;
        }
        if self.cancel_at_period_end && self.current_period_end.is_some_and(|end| end <= now) {
            events.push(SubscriptionEvent::CancellationTookEffect {
                from: self.effective_tier(self.current_period_end.unwrap() - Duration::seconds(1), catalog),
            });
            return events;
        }
        if let Some(change) = self.scheduled_change
            && change.effective_at <= now
        {
            events.push(SubscriptionEvent::ScheduledChangeTookEffect {
                from: self.tier,
                change,
            });
        }
        events
    }
}
