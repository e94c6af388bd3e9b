//! One given/when/then test per business rule of the Subscription aggregate.
//! The Stripe gateway here is a recorder: these tests are about decisions; the
//! real Stripe client is exercised end to end against localstripe.

use super::*;
use crate::clock::ManualClock;
use crate::plans::{BillingCycle, Limit, Overrides, PlanCatalog, Tier};
use chrono::{DateTime, Duration, Months, TimeZone, Utc};
use cqrs_es::Aggregate;
use cqrs_es::test::TestFramework;
use std::sync::{Arc, Mutex};
use uuid::Uuid;

type Fixture = TestFramework<Subscription>;

const TENANT: Uuid = Uuid::from_u128(1);
const SUB: &str = "sub_1";
const CUS: &str = "cus_1";

fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 1, 12, 0, 0).unwrap()
}

#[derive(Default)]
struct RecordingGateway(Mutex<Vec<String>>);

#[async_trait::async_trait]
impl BillingGateway for RecordingGateway {
    async fn set_cancel_at_period_end(&self, subscription_id: &str, cancel: bool) -> Result<(), String> {
        self.0
            .lock()
            .unwrap()
            .push(format!("cancel_at_period_end {subscription_id} {cancel}"));
        Ok(())
    }
    async fn change_price(&self, subscription_id: &str, price_id: &str, prorate: bool) -> Result<(), String> {
        self.0
            .lock()
            .unwrap()
            .push(format!("change_price {subscription_id} {price_id} {prorate}"));
        Ok(())
    }
}

fn services(clock: &ManualClock, gateway: Option<Arc<RecordingGateway>>) -> SubscriptionServices {
    SubscriptionServices {
        clock: Arc::new(clock.clone()),
        catalog: Arc::new(PlanCatalog::shipped()),
        gateway: gateway.map(|g| g as Arc<dyn BillingGateway>),
    }
}

fn fixture() -> Fixture {
    Fixture::with(services(&ManualClock::at(start()), Some(Arc::default())))
}

fn created() -> SubscriptionEvent {
    SubscriptionEvent::SubscriptionCreated {
        tenant_id: TENANT,
        tier: Tier::Free,
        status: SubscriptionStatus::Active,
    }
}

fn state(tier: Tier, status: SubscriptionStatus) -> StripeSubscriptionState {
    StripeSubscriptionState {
        subscription_id: SUB.into(),
        customer_id: CUS.into(),
        status,
        plan: Some((tier, BillingCycle::Monthly)),
        amount_cents: Some(25000),
        current_period_start: Some(start()),
        current_period_end: Some(start() + Months::new(1)),
        cancel_at_period_end: false,
        trial_end: None,
    }
}

fn synced(id: &str, created_at: DateTime<Utc>, state: StripeSubscriptionState) -> SubscriptionEvent {
    SubscriptionEvent::StripeSubscriptionSynced {
        stripe_event_id: id.into(),
        stripe_event_type: "customer.subscription.updated".into(),
        stripe_event_created: created_at,
        state,
    }
}

fn stripe(id: &str, created_at: DateTime<Utc>, fact: StripeFact) -> SubscriptionCommand {
    SubscriptionCommand::ApplyStripeEvent(StripeChange {
        event_id: id.into(),
        event_type: "customer.subscription.updated".into(),
        event_created: created_at,
        fact,
    })
}

fn on_pro() -> Vec<SubscriptionEvent> {
    vec![
        created(),
        synced("evt_0", start(), state(Tier::Pro, SubscriptionStatus::Active)),
    ]
}

fn fold(events: Vec<SubscriptionEvent>) -> Subscription {
    let mut subscription = Subscription::default();
    for event in events {
        subscription.apply(event);
    }
    subscription
}

fn invoice(status: &str) -> InvoiceRecord {
    InvoiceRecord {
        invoice_id: "in_1".into(),
        number: Some("CW-0001".into()),
        subscription_id: Some(SUB.into()),
        status: status.into(),
        currency: "usd".into(),
        amount_due_cents: 25000,
        amount_paid_cents: if status == "paid" { 25000 } else { 0 },
        hosted_invoice_url: Some("https://invoice.stripe.com/i/1".into()),
        invoice_pdf: Some("https://pay.stripe.com/invoice/1/pdf".into()),
        period_start: Some(start()),
        period_end: Some(start() + Months::new(1)),
    }
}

#[test]
fn a_tenant_starts_free_and_active() {
    fixture()
        .given_no_previous_events()
        .when(SubscriptionCommand::Create { tenant_id: TENANT })
        .then_expect_events(vec![created()]);
}

#[test]
fn a_subscription_is_created_once() {
    fixture()
        .given(vec![created()])
        .when(SubscriptionCommand::Create { tenant_id: TENANT })
        .then_expect_error(SubscriptionError::AlreadyExists);
}

#[test]
fn checkout_links_the_customer_and_records_the_session() {
    fixture()
        .given(vec![created()])
        .when(SubscriptionCommand::StartCheckout {
            tier: Tier::Pro,
            cycle: BillingCycle::Annual,
            session_id: "cs_1".into(),
            customer_id: CUS.into(),
        })
        .then_expect_events(vec![
            SubscriptionEvent::StripeCustomerLinked {
                customer_id: CUS.into(),
            },
            SubscriptionEvent::CheckoutStarted {
                tier: Tier::Pro,
                cycle: BillingCycle::Annual,
                session_id: "cs_1".into(),
                customer_id: CUS.into(),
            },
        ]);
}

#[test]
fn free_and_retired_tiers_cannot_be_bought() {
    for tier in [Tier::Free, Tier::Subscriber] {
        fixture()
            .given(vec![created()])
            .when(SubscriptionCommand::StartCheckout {
                tier,
                cycle: BillingCycle::Monthly,
                session_id: "cs_1".into(),
                customer_id: CUS.into(),
            })
            .then_expect_error(SubscriptionError::Rule(format!("the {tier} tier cannot be bought")));
    }
}

#[test]
fn a_stripe_subscription_state_is_adopted() {
    let change = StripeFact::SubscriptionChanged(state(Tier::Pro, SubscriptionStatus::Active));
    fixture()
        .given(vec![created()])
        .when(stripe("evt_0", start(), change))
        .then_expect_events(vec![synced(
            "evt_0",
            start(),
            state(Tier::Pro, SubscriptionStatus::Active),
        )]);
    let pro = fold(on_pro());
    assert_eq!(pro.effective_tier(start(), &PlanCatalog::shipped()), Tier::Pro);
}

#[test]
fn a_stripe_event_is_applied_at_most_once() {
    let change = StripeFact::SubscriptionChanged(state(Tier::Individual, SubscriptionStatus::Active));
    fixture()
        .given(on_pro())
        .when(stripe("evt_0", start() + Duration::hours(1), change))
        .then_expect_events(vec![]);
}

#[test]
fn an_older_state_delivered_late_is_ignored() {
    let older = StripeFact::SubscriptionChanged(state(Tier::Individual, SubscriptionStatus::Active));
    fixture()
        .given(on_pro())
        .when(stripe("evt_old", start() - Duration::minutes(5), older))
        .then_expect_events(vec![SubscriptionEvent::StripeEventIgnored {
            stripe_event_id: "evt_old".into(),
            stripe_event_type: "customer.subscription.updated".into(),
            reason: "a newer state of the subscription was already applied".into(),
        }]);
}

#[test]
fn a_deleted_subscription_is_never_revived_by_a_late_update() {
    let mut given = on_pro();
    given.push(SubscriptionEvent::StripeSubscriptionEnded {
        stripe_event_id: "evt_del".into(),
        stripe_event_created: start() + Duration::days(3),
        subscription_id: SUB.into(),
    });
    let late = StripeFact::SubscriptionChanged(state(Tier::Pro, SubscriptionStatus::Active));
    fixture()
        .given(given)
        .when(stripe("evt_late", start() + Duration::days(4), late))
        .then_expect_events(vec![SubscriptionEvent::StripeEventIgnored {
            stripe_event_id: "evt_late".into(),
            stripe_event_type: "customer.subscription.updated".into(),
            reason: "the subscription has already ended".into(),
        }]);
}

#[test]
fn a_deleted_subscription_puts_the_tenant_on_free() {
    let deleted = StripeFact::SubscriptionDeleted(state(Tier::Pro, SubscriptionStatus::Cancelled));
    let ended = SubscriptionEvent::StripeSubscriptionEnded {
        stripe_event_id: "evt_del".into(),
        stripe_event_created: start() + Duration::days(1),
        subscription_id: SUB.into(),
    };
    fixture()
        .given(on_pro())
        .when(stripe("evt_del", start() + Duration::days(1), deleted))
        .then_expect_events(vec![ended.clone()]);
    let mut events = on_pro();
    events.push(ended);
    let subscription = fold(events);
    assert_eq!(
        (subscription.tier, subscription.status),
        (Tier::Free, SubscriptionStatus::Cancelled)
    );
}

#[test]
fn a_failed_payment_makes_the_subscription_past_due_and_records_the_invoice() {
    let at = start() + Duration::days(31);
    fixture()
        .given(on_pro())
        .when(stripe(
            "evt_fail",
            at,
            StripeFact::InvoicePaymentFailed(invoice("open")),
        ))
        .then_expect_events(vec![
            SubscriptionEvent::InvoiceRecorded {
                stripe_event_id: "evt_fail".into(),
                stripe_event_type: "customer.subscription.updated".into(),
                invoice: invoice("open"),
            },
            SubscriptionEvent::PaymentFailed {
                stripe_event_id: "evt_fail".into(),
                at,
            },
        ]);
}

#[test]
fn past_due_keeps_the_tier_while_stripe_retries_then_falls_to_free() {
    let catalog = PlanCatalog::shipped();
    let failed_at = start() + Duration::days(31);
    let mut events = on_pro();
    events.push(SubscriptionEvent::PaymentFailed {
        stripe_event_id: "evt_fail".into(),
        at: failed_at,
    });
    let subscription = fold(events);
    assert_eq!(
        subscription.effective_tier(failed_at + Duration::days(6), &catalog),
        Tier::Pro
    );
    assert_eq!(
        subscription.effective_tier(failed_at + Duration::days(7), &catalog),
        Tier::Free
    );
}

#[test]
fn a_paid_invoice_recovers_a_past_due_subscription() {
    let mut given = on_pro();
    given.push(SubscriptionEvent::PaymentFailed {
        stripe_event_id: "evt_fail".into(),
        at: start() + Duration::days(31),
    });
    fixture()
        .given(given)
        .when(stripe(
            "evt_paid",
            start() + Duration::days(32),
            StripeFact::InvoicePaid(invoice("paid")),
        ))
        .then_expect_events(vec![
            SubscriptionEvent::InvoiceRecorded {
                stripe_event_id: "evt_paid".into(),
                stripe_event_type: "customer.subscription.updated".into(),
                invoice: invoice("paid"),
            },
            SubscriptionEvent::PaymentRecovered {
                stripe_event_id: "evt_paid".into(),
            },
        ]);
}

#[test]
fn an_admin_grace_period_keeps_the_tier_of_a_past_due_tenant() {
    let catalog = PlanCatalog::shipped();
    let failed_at = start() + Duration::days(31);
    let mut events = on_pro();
    events.push(SubscriptionEvent::PaymentFailed {
        stripe_event_id: "evt_fail".into(),
        at: failed_at,
    });
    events.push(SubscriptionEvent::GracePeriodGranted {
        until: failed_at + Duration::days(30),
        reason: "card replaced, support case 42".into(),
    });
    let subscription = fold(events);
    assert_eq!(
        subscription.effective_tier(failed_at + Duration::days(20), &catalog),
        Tier::Pro
    );
    assert_eq!(
        subscription.effective_tier(failed_at + Duration::days(30), &catalog),
        Tier::Free
    );
}

#[test]
fn a_grace_period_must_end_in_the_future_and_have_a_reason() {
    fixture()
        .given(vec![created()])
        .when(SubscriptionCommand::GrantGracePeriod {
            until: start() - Duration::days(1),
            reason: "late".into(),
        })
        .then_expect_error(SubscriptionError::Rule("a grace period must end in the future".into()));
    fixture()
        .given(vec![created()])
        .when(SubscriptionCommand::GrantGracePeriod {
            until: start() + Duration::days(1),
            reason: "  ".into(),
        })
        .then_expect_error(SubscriptionError::Rule(
            "a grace period needs a reason of 1 to 500 characters".into(),
        ));
}

#[test]
fn an_upgrade_takes_effect_now_and_prorates_at_stripe() {
    let gateway = Arc::new(RecordingGateway::default());
    let mut individual = vec![created()];
    individual.push(synced(
        "evt_0",
        start(),
        state(Tier::Individual, SubscriptionStatus::Active),
    ));
    Fixture::with(services(&ManualClock::at(start()), Some(gateway.clone())))
        .given(individual)
        .when(SubscriptionCommand::ChangePlan {
            tier: Tier::Pro,
            cycle: BillingCycle::Monthly,
            usage: Usage::default(),
        })
        .then_expect_events(vec![SubscriptionEvent::PlanUpgraded {
            from: Tier::Individual,
            to: Tier::Pro,
            cycle: BillingCycle::Monthly,
        }]);
    assert_eq!(
        *gateway.0.lock().unwrap(),
        vec!["change_price sub_1 price_pro_monthly true"]
    );
}

#[test]
fn a_downgrade_waits_for_the_period_end() {
    let gateway = Arc::new(RecordingGateway::default());
    let change = ScheduledChange {
        to_tier: Tier::Individual,
        cycle: Some(BillingCycle::Monthly),
        effective_at: start() + Months::new(1),
    };
    Fixture::with(services(&ManualClock::at(start()), Some(gateway.clone())))
        .given(on_pro())
        .when(SubscriptionCommand::ChangePlan {
            tier: Tier::Individual,
            cycle: BillingCycle::Monthly,
            usage: Usage {
                accounts: 6,
                members: 3,
            },
        })
        .then_expect_events(vec![SubscriptionEvent::DowngradeScheduled { change }]);
    assert_eq!(
        *gateway.0.lock().unwrap(),
        vec!["change_price sub_1 price_individual_monthly false"]
    );
    let mut events = on_pro();
    events.push(SubscriptionEvent::DowngradeScheduled { change });
    let subscription = fold(events);
    let catalog = PlanCatalog::shipped();
    assert_eq!(
        subscription.effective_tier(change.effective_at - Duration::seconds(1), &catalog),
        Tier::Pro
    );
    assert_eq!(
        subscription.effective_tier(change.effective_at, &catalog),
        Tier::Individual
    );
}

#[test]
fn a_downgrade_is_refused_while_usage_exceeds_the_target_limits() {
    fixture()
        .given(on_pro())
        .when(SubscriptionCommand::ChangePlan {
            tier: Tier::Individual,
            cycle: BillingCycle::Monthly,
            usage: Usage {
                accounts: 2,
                members: 4,
            },
        })
        .then_expect_error(SubscriptionError::OverTargetLimit {
            metric: "members",
            used: 4,
            limit: 3,
            tier: Tier::Individual,
        });
}

#[test]
fn changing_to_a_paid_tier_without_a_subscription_needs_checkout() {
    fixture()
        .given(vec![created()])
        .when(SubscriptionCommand::ChangePlan {
            tier: Tier::Pro,
            cycle: BillingCycle::Monthly,
            usage: Usage::default(),
        })
        .then_expect_error(SubscriptionError::Rule(
            "the tenant has no paid subscription: buy the PRO tier through checkout".into(),
        ));
}

#[test]
fn cancellation_at_period_end_falls_to_free_when_the_period_ends() {
    let gateway = Arc::new(RecordingGateway::default());
    let end = start() + Months::new(1);
    Fixture::with(services(&ManualClock::at(start()), Some(gateway.clone())))
        .given(on_pro())
        .when(SubscriptionCommand::CancelAtPeriodEnd)
        .then_expect_events(vec![SubscriptionEvent::CancellationScheduled { effective_at: end }]);
    assert_eq!(*gateway.0.lock().unwrap(), vec!["cancel_at_period_end sub_1 true"]);

    let mut events = on_pro();
    events.push(SubscriptionEvent::CancellationScheduled { effective_at: end });
    let catalog = PlanCatalog::shipped();
    let subscription = fold(events.clone());
    assert_eq!(
        subscription.effective_tier(end - Duration::seconds(1), &catalog),
        Tier::Pro
    );
    assert_eq!(subscription.effective_tier(end, &catalog), Tier::Free);
    assert_eq!(subscription.next_transition_at(), Some(end));
    Fixture::with(services(&ManualClock::at(end), None))
        .given(events)
        .when(SubscriptionCommand::Settle)
        .then_expect_events(vec![SubscriptionEvent::CancellationTookEffect { from: Tier::Pro }]);
}

#[test]
fn reactivation_withdraws_a_cancellation_before_the_period_ends() {
    let mut given = on_pro();
    given.push(SubscriptionEvent::CancellationScheduled {
        effective_at: start() + Months::new(1),
    });
    fixture()
        .given(given.clone())
        .when(SubscriptionCommand::Reactivate)
        .then_expect_events(vec![SubscriptionEvent::CancellationWithdrawn {}]);
    Fixture::with(services(
        &ManualClock::at(start() + Months::new(2)),
        Some(Arc::default()),
    ))
    .given(given)
    .when(SubscriptionCommand::Reactivate)
    .then_expect_error(SubscriptionError::Rule(
        "the period has ended: start a new checkout".into(),
    ));
}

#[test]
fn nothing_to_cancel_without_a_paid_subscription() {
    fixture()
        .given(vec![created()])
        .when(SubscriptionCommand::CancelAtPeriodEnd)
        .then_expect_error(SubscriptionError::Rule(
            "there is no paid subscription to cancel".into(),
        ));
}

#[test]
fn stripe_changes_need_billing_to_be_configured() {
    Fixture::with(services(&ManualClock::at(start()), None))
        .given(on_pro())
        .when(SubscriptionCommand::CancelAtPeriodEnd)
        .then_expect_error(SubscriptionError::BillingNotConfigured);
}

#[test]
fn overrides_are_set_and_removed_by_patch() {
    let twelve = Overrides {
        max_members: Some(Limit::AtMost(12)),
        ..Overrides::default()
    };
    fixture()
        .given(vec![created()])
        .when(SubscriptionCommand::SetOverrides {
            patch: OverridesPatch {
                max_members: Some(Some(Limit::AtMost(12))),
                ..OverridesPatch::default()
            },
        })
        .then_expect_events(vec![SubscriptionEvent::OverridesSet { overrides: twelve }]);
    fixture()
        .given(vec![created(), SubscriptionEvent::OverridesSet { overrides: twelve }])
        .when(SubscriptionCommand::SetOverrides {
            patch: OverridesPatch {
                max_members: Some(None),
                ..OverridesPatch::default()
            },
        })
        .then_expect_events(vec![SubscriptionEvent::OverridesSet {
            overrides: Overrides::default(),
        }]);
    let subscription = fold(vec![created(), SubscriptionEvent::OverridesSet { overrides: twelve }]);
    assert_eq!(
        subscription.entitlements(start(), &PlanCatalog::shipped()).max_members,
        Limit::AtMost(12)
    );
}

#[test]
fn a_legacy_tenant_keeps_its_limits_for_three_months_then_falls_to_free() {
    let clock = ManualClock::at(start());
    let grace_until = start() + Months::new(3);
    let migrated = SubscriptionEvent::LegacyTierMigrated {
        from: Tier::Subscriber,
        grace_until,
    };
    Fixture::with(services(&clock, None))
        .given(vec![created()])
        .when(SubscriptionCommand::MigrateFromLegacy)
        .then_expect_events(vec![migrated.clone()]);

    let catalog = PlanCatalog::shipped();
    let subscription = fold(vec![created(), migrated.clone()]);
    let legacy_limits = catalog.plan(Tier::Subscriber).entitlements();
    assert_eq!(
        subscription.entitlements(grace_until - Duration::seconds(1), &catalog),
        legacy_limits
    );
    assert_eq!(subscription.effective_tier(grace_until, &catalog), Tier::Free);

    // A day before the grace ends nothing is due yet.
    clock.advance(Duration::days(91));
    Fixture::with(services(&clock, None))
        .given(vec![created(), migrated.clone()])
        .when(SubscriptionCommand::Settle)
        .then_expect_events(vec![]);
    let at_grace_end = ManualClock::at(grace_until);
    Fixture::with(services(&at_grace_end, None))
        .given(vec![created(), migrated])
        .when(SubscriptionCommand::Settle)
        .then_expect_events(vec![SubscriptionEvent::LegacyGraceEnded { to: Tier::Free }]);
}

#[test]
fn a_legacy_tenant_falls_to_the_tier_it_chose() {
    let grace_until = start() + Months::new(3);
    let migrated = SubscriptionEvent::LegacyTierMigrated {
        from: Tier::Subscriber,
        grace_until,
    };
    let chose = SubscriptionEvent::LegacyFallbackChosen { tier: Tier::Free };
    fixture()
        .given(vec![created(), migrated.clone()])
        .when(SubscriptionCommand::ChangePlan {
            tier: Tier::Free,
            cycle: BillingCycle::Monthly,
            usage: Usage {
                accounts: 1,
                members: 1,
            },
        })
        .then_expect_events(vec![chose.clone()]);
    // Buying a tier during the grace period replaces the legacy arrangement.
    let mut bought = vec![created(), migrated];
    bought.push(synced(
        "evt_buy",
        start() + Duration::days(10),
        state(Tier::Pro, SubscriptionStatus::Active),
    ));
    let subscription = fold(bought);
    assert_eq!(subscription.legacy, None);
    assert_eq!(
        subscription.effective_tier(grace_until + Duration::days(1), &PlanCatalog::shipped()),
        Tier::Pro
    );
}

#[test]
fn a_usage_threshold_is_recorded_once_per_period() {
    let crossed = SubscriptionEvent::UsageThresholdCrossed {
        metric: "members".into(),
        threshold: 80,
        used: 4,
        limit: 5,
        period_start: start(),
    };
    let record = || SubscriptionCommand::RecordUsageThreshold {
        metric: "members".into(),
        threshold: 80,
        used: 4,
        limit: 5,
        period_start: start(),
    };
    fixture()
        .given(vec![created()])
        .when(record())
        .then_expect_events(vec![crossed.clone()]);
    fixture()
        .given(vec![created(), crossed])
        .when(record())
        .then_expect_events(vec![]);
}

#[test]
fn usage_is_metered_by_stripe_period_or_calendar_month() {
    let free = fold(vec![created()]);
    let now = Utc.with_ymd_and_hms(2026, 11, 21, 9, 0, 0).unwrap();
    assert_eq!(
        free.usage_period(now),
        (
            Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap()
        )
    );
    let pro = fold(on_pro());
    assert_eq!(
        pro.usage_period(start() + Duration::days(3)),
        (start(), start() + Months::new(1))
    );
}
