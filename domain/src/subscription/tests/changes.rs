//! Grace periods, plan changes, cancellation, overrides, legacy migration and usage.

use super::*;

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
