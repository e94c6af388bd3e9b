//! Creation, checkout, and Stripe's facts (order, redelivery, payment failures).

use super::*;

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
