//! The Subscription aggregate's decisions: one function per command; Stripe
//! is called (through [`BillingGateway`]) only for a change already decided.

use super::commands::*;
use super::error::SubscriptionError;
use super::events::{ScheduledChange, SubscriptionEvent};
use super::state::{Rank, Subscription, SubscriptionStatus, threshold_key};
use crate::clock::{Clock, SystemClock};
use crate::ids::TenantId;
use crate::plans::{BillingCycle, Limit, PlanCatalog, Tier};
use chrono::{DateTime, Duration, Months, Utc};
use cqrs_es::Aggregate;
use cqrs_es::event_sink::EventSink;
use std::sync::Arc;

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

type Decision = Result<Vec<SubscriptionEvent>, SubscriptionError>;

/// A Stripe call a decision needs before its events are written.
pub(super) enum Effect {
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
        crate::emit::emit(self, sink, events).await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        self.fold(event);
    }
}

impl Subscription {
    pub(super) fn decide(
        &self,
        command: SubscriptionCommand,
        now: DateTime<Utc>,
        catalog: &PlanCatalog,
    ) -> Result<(Vec<SubscriptionEvent>, Effect), SubscriptionError> {
        use SubscriptionCommand as C;
        let only = |events: Decision| events.map(|events| (events, Effect::None));
        if let C::Create { tenant_id } = command {
            return only(self.create(tenant_id));
        }
        if self.tenant_id.is_none() {
            return Err(SubscriptionError::NotFound);
        }
        match command {
            C::Create { .. } => unreachable!("handled above"),
            C::StartCheckout {
                tier,
                cycle,
                session_id,
                customer_id,
            } => only(self.start_checkout(tier, cycle, session_id, customer_id, catalog)),
            C::ApplyStripeEvent(change) => only(Ok(self.apply_stripe(change))),
            C::ChangePlan { tier, cycle, usage } => self.change_plan(tier, cycle, usage, now, catalog),
            C::CancelAtPeriodEnd => self.cancel_at_period_end(),
            C::Reactivate => self.reactivate(now),
            C::SetOverrides { patch } => only(Ok(self.set_overrides(patch))),
            C::GrantGracePeriod { until, reason } => only(self.grant_grace_period(until, reason, now)),
            C::MigrateFromLegacy => only(self.migrate_from_legacy(now, catalog)),
            C::Settle => only(Ok(self.settle(now, catalog))),
            C::RecordUsageThreshold {
                metric,
                threshold,
                used,
                limit,
                period_start,
            } => only(Ok(self.record_usage_threshold(
                metric,
                threshold,
                used,
                limit,
                period_start,
            ))),
        }
    }

    fn create(&self, tenant_id: TenantId) -> Decision {
        if self.tenant_id.is_some() {
            return Err(SubscriptionError::AlreadyExists);
        }
        Ok(vec![SubscriptionEvent::SubscriptionCreated {
            tenant_id,
            tier: Tier::Free,
            status: SubscriptionStatus::Active,
        }])
    }

    fn cancel_at_period_end(&self) -> Result<(Vec<SubscriptionEvent>, Effect), SubscriptionError> {
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

    fn reactivate(&self, now: DateTime<Utc>) -> Result<(Vec<SubscriptionEvent>, Effect), SubscriptionError> {
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

    fn set_overrides(&self, patch: OverridesPatch) -> Vec<SubscriptionEvent> {
        let overrides = patch.apply(self.overrides);
        if overrides == self.overrides {
            return vec![];
        }
        vec![SubscriptionEvent::OverridesSet { overrides }]
    }

    fn grant_grace_period(&self, until: DateTime<Utc>, reason: String, now: DateTime<Utc>) -> Decision {
        let reason = reason.trim().to_owned();
        if until <= now {
            return Err(SubscriptionError::Rule("a grace period must end in the future".into()));
        }
        if reason.is_empty() || reason.chars().count() > 500 {
            return Err(SubscriptionError::Rule(
                "a grace period needs a reason of 1 to 500 characters".into(),
            ));
        }
        Ok(vec![SubscriptionEvent::GracePeriodGranted { until, reason }])
    }

    fn migrate_from_legacy(&self, now: DateTime<Utc>, catalog: &PlanCatalog) -> Decision {
        if self.legacy.is_some() || self.has_paid_subscription() || self.tier != Tier::Free {
            return Err(SubscriptionError::Conflict(
                "only a FREE tenant without a paid subscription can be migrated from the legacy tier".into(),
            ));
        }
        let grace_until = now + Months::new(catalog.legacy_grace_months);
        Ok(vec![SubscriptionEvent::LegacyTierMigrated {
            from: Tier::Subscriber,
            grace_until,
        }])
    }

    fn record_usage_threshold(
        &self,
        metric: String,
        threshold: u8,
        used: u64,
        limit: u64,
        period_start: DateTime<Utc>,
    ) -> Vec<SubscriptionEvent> {
        if self
            .thresholds
            .contains(&threshold_key(&metric, threshold, period_start))
        {
            return vec![];
        }
        vec![SubscriptionEvent::UsageThresholdCrossed {
            metric,
            threshold,
            used,
            limit,
            period_start,
        }]
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
        // Stripe delivers in any order and retries for days. Each report is
        // kept if it is the newest of its object (`Rank`), and the state is
        // derived from the newest reports, so any order ends the same.
        match fact {
            StripeFact::CheckoutCompleted { subscription, .. } | StripeFact::SubscriptionChanged(subscription) => {
                if self.ended_subscriptions.contains(&subscription.subscription_id) {
                    return ignored("the subscription has already ended");
                }
                let rank = Rank::subscription(event_created, subscription.status, &event_id);
                let newest = self
                    .stripe_reports
                    .get(&subscription.subscription_id)
                    .and_then(|report| report.state.as_ref());
                if newest.is_some_and(|(newest, _)| *newest >= rank) {
                    return ignored("a newer state of the subscription was already applied");
                }
                vec![SubscriptionEvent::StripeSubscriptionSynced {
                    stripe_event_id: event_id,
                    stripe_event_type: event_type,
                    stripe_event_created: event_created,
                    state: subscription,
                }]
            }
            // Recorded even before any other report of the subscription
            // arrived: whatever comes later of it is then older.
            StripeFact::SubscriptionDeleted(subscription) => {
                if self.ended_subscriptions.contains(&subscription.subscription_id) {
                    return ignored("the subscription has already ended");
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
            StripeFact::InvoicePaid(invoice) | StripeFact::InvoicePaymentFailed(invoice) => {
                let rank = Rank::invoice(event_created, invoice.status == "paid", &event_id);
                if self
                    .invoice_reports
                    .get(&invoice.invoice_id)
                    .is_some_and(|newest| newest.rank >= rank)
                {
                    return ignored("a newer report of the invoice was already recorded");
                }
                let recorded = SubscriptionEvent::InvoiceRecorded {
                    stripe_event_id: event_id.clone(),
                    stripe_event_type: event_type,
                    stripe_event_created: Some(event_created),
                    invoice,
                };
                // What the report does to the subscription is announced.
                let mut after = self.clone();
                after.apply(recorded.clone());
                let mut events = vec![recorded];
                match (self.status, after.status) {
                    (before, SubscriptionStatus::PastDue) if before != SubscriptionStatus::PastDue => {
                        events.push(SubscriptionEvent::PaymentFailed {
                            stripe_event_id: event_id,
                            at: after.past_due_since.unwrap_or(event_created),
                        });
                    }
                    (SubscriptionStatus::PastDue, after) if after != SubscriptionStatus::PastDue => {
                        events.push(SubscriptionEvent::PaymentRecovered {
                            stripe_event_id: event_id,
                        });
                    }
                    _ => {}
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
