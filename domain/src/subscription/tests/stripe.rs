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
                stripe_event_created: Some(at),
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
                stripe_event_created: Some(start() + Duration::days(32)),
                invoice: invoice("paid"),
            },
            SubscriptionEvent::PaymentRecovered {
                stripe_event_id: "evt_paid".into(),
            },
        ]);
}

#[test]
fn a_deletion_delivered_before_the_subscription_is_known_ends_it_and_nothing_older_revives_it() {
    let deleted = StripeFact::SubscriptionDeleted(state(Tier::Pro, SubscriptionStatus::Cancelled));
    let ended = SubscriptionEvent::StripeSubscriptionEnded {
        stripe_event_id: "evt_del".into(),
        stripe_event_created: start() + Duration::days(3),
        subscription_id: SUB.into(),
    };
    fixture()
        .given(vec![created()])
        .when(stripe("evt_del", start() + Duration::days(3), deleted))
        .then_expect_events(vec![ended.clone()]);
    let older = StripeFact::SubscriptionChanged(state(Tier::Pro, SubscriptionStatus::Active));
    fixture()
        .given(vec![created(), ended])
        .when(stripe("evt_created", start(), older))
        .then_expect_events(vec![SubscriptionEvent::StripeEventIgnored {
            stripe_event_id: "evt_created".into(),
            stripe_event_type: "customer.subscription.updated".into(),
            reason: "the subscription has already ended".into(),
        }]);
}

#[test]
fn a_failed_payment_reported_before_the_subscription_makes_it_past_due_once_it_is_known() {
    let failed_at = start() + Duration::days(31);
    let mut events = vec![created()];
    events.push(SubscriptionEvent::InvoiceRecorded {
        stripe_event_id: "evt_fail".into(),
        stripe_event_type: "invoice.payment_failed".into(),
        stripe_event_created: Some(failed_at),
        invoice: invoice("open"),
    });
    assert_eq!(
        fold(events.clone()).status,
        SubscriptionStatus::Active,
        "no subscription yet"
    );
    events.push(synced("evt_0", start(), state(Tier::Pro, SubscriptionStatus::Active)));
    let subscription = fold(events);
    assert_eq!(subscription.status, SubscriptionStatus::PastDue);
    assert_eq!(subscription.past_due_since, Some(failed_at));
}

#[test]
fn an_older_report_of_an_invoice_is_ignored() {
    let mut given = on_pro();
    given.push(SubscriptionEvent::InvoiceRecorded {
        stripe_event_id: "evt_paid".into(),
        stripe_event_type: "invoice.paid".into(),
        stripe_event_created: Some(start() + Duration::days(32)),
        invoice: invoice("paid"),
    });
    fixture()
        .given(given)
        .when(stripe(
            "evt_fail",
            start() + Duration::days(31),
            StripeFact::InvoicePaymentFailed(invoice("open")),
        ))
        .then_expect_events(vec![SubscriptionEvent::StripeEventIgnored {
            stripe_event_id: "evt_fail".into(),
            stripe_event_type: "customer.subscription.updated".into(),
            reason: "a newer report of the invoice was already recorded".into(),
        }]);
}

/// What a tenant sees of its subscription (not the bookkeeping of reports).
fn seen(subscription: &Subscription) -> String {
    format!(
        "{:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?}",
        subscription.tier,
        subscription.status,
        subscription.cycle,
        subscription.stripe_subscription_id,
        subscription.amount_cents,
        subscription.current_period_end,
        subscription.cancel_at_period_end,
        subscription.past_due_since,
        subscription.ended_subscriptions,
        subscription
            .invoice_reports
            .iter()
            .map(|(id, report)| (id.clone(), report.paid))
            .collect::<Vec<_>>(),
        subscription.stripe_as_of,
    )
}

fn permutations<T: Clone>(items: &[T]) -> Vec<Vec<T>> {
    if items.len() <= 1 {
        return vec![items.to_vec()];
    }
    let mut all = vec![];
    for i in 0..items.len() {
        let mut rest = items.to_vec();
        let first = rest.remove(i);
        for mut tail in permutations(&rest) {
            tail.insert(0, first.clone());
            all.push(tail);
        }
    }
    all
}

/// Decides each delivery in turn on the state so far, as the webhook does.
fn deliver_all(deliveries: &[SubscriptionCommand]) -> Subscription {
    let catalog = PlanCatalog::shipped();
    let mut subscription = fold(vec![created()]);
    for delivery in deliveries {
        let (events, _) = subscription
            .decide(delivery.clone(), start(), &catalog)
            .expect("a Stripe fact is never refused");
        for event in events {
            subscription.apply(event);
        }
    }
    subscription
}

fn life(end: Option<DateTime<Utc>>) -> Vec<SubscriptionCommand> {
    let t = |minutes: i64| start() + Duration::minutes(minutes);
    let paid = |id: &str| InvoiceRecord {
        invoice_id: id.into(),
        ..invoice("paid")
    };
    let failed = |id: &str| InvoiceRecord {
        invoice_id: id.into(),
        ..invoice("open")
    };
    let mut past_due = state(Tier::Pro, SubscriptionStatus::PastDue);
    past_due.current_period_start = Some(start() + Months::new(1));
    past_due.current_period_end = Some(start() + Months::new(2));
    let mut deliveries = vec![
        stripe(
            "evt_created",
            t(0),
            StripeFact::SubscriptionChanged(state(Tier::Pro, SubscriptionStatus::Active)),
        ),
        // The first invoice is paid in the same second the subscription is created.
        stripe("evt_paid_1", t(0), StripeFact::InvoicePaid(paid("in_1"))),
        stripe("evt_failed_2", t(60), StripeFact::InvoicePaymentFailed(failed("in_2"))),
        stripe("evt_past_due", t(61), StripeFact::SubscriptionChanged(past_due)),
        stripe(
            "evt_failed_2b",
            t(120),
            StripeFact::InvoicePaymentFailed(failed("in_2")),
        ),
    ];
    if let Some(at) = end {
        let deleted = state(Tier::Pro, SubscriptionStatus::Cancelled);
        deliveries.push(stripe("evt_deleted", at, StripeFact::SubscriptionDeleted(deleted)));
    } else {
        deliveries.push(stripe("evt_paid_2", t(180), StripeFact::InvoicePaid(paid("in_2"))));
    }
    deliveries
}

#[test]
fn every_delivery_order_of_a_subscriptions_life_ends_in_stripes_state() {
    // Ended: deleted after the failed retries.
    let in_order = deliver_all(&life(Some(start() + Duration::minutes(240))));
    assert_eq!(
        (in_order.tier, in_order.status, in_order.stripe_subscription_id.clone()),
        (Tier::Free, SubscriptionStatus::Cancelled, None)
    );
    for order in permutations(&life(Some(start() + Duration::minutes(240)))) {
        assert_eq!(seen(&deliver_all(&order)), seen(&in_order), "{order:#?}");
    }
    // Recovered: the failed invoice is paid at last.
    let in_order = deliver_all(&life(None));
    assert_eq!(
        (in_order.tier, in_order.status, in_order.past_due_since),
        (Tier::Pro, SubscriptionStatus::Active, None)
    );
    assert!(in_order.invoice_reports.values().all(|report| report.paid));
    for order in permutations(&life(None)) {
        assert_eq!(seen(&deliver_all(&order)), seen(&in_order), "{order:#?}");
    }
}
