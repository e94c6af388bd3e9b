//! One given/when/then test per business rule of the Subscription aggregate.
//! The Stripe gateway here is a recorder: these tests are about decisions; the
//! real Stripe client is exercised end to end against localstripe.

mod changes;
mod stripe;

use super::*;
use crate::clock::ManualClock;
use crate::ids::TenantId;
use crate::plans::{BillingCycle, Limit, Overrides, PlanCatalog, Tier};
use chrono::{DateTime, Duration, Months, TimeZone, Utc};
use cqrs_es::Aggregate;
use cqrs_es::test::TestFramework;
use std::sync::{Arc, Mutex};

type Fixture = TestFramework<Subscription>;

const TENANT: TenantId = TenantId::from_u128(1);
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
