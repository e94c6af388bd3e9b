//! Subscriptions, Stripe billing, usage meters and plan enforcement, end to
//! end: the real server and PostgreSQL, localstripe as Stripe (see
//! stripe_fakes.rs for what it cannot do and what stands in), webhooks
//! signed by localstripe itself or by the official `stripe` library.

use crate::helpers::{ADMIN_TOKEN, TestApp, TestTenant, expect_status, spawn_app, spawn_app_with};
use crate::stripe_fakes::{
    Localstripe, SECRET_KEY, StripeFront, WEBHOOK_SECRET, event, invoice_object, sign, sign_many, subscription_object,
};
use chrono::{Duration, Utc};
use coverwatch_domain::clock::{ManualClock, SystemClock};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Instant;

struct Billed {
    app: TestApp,
    stripe: Localstripe,
    front: StripeFront,
}

async fn billed_app_with(clock: Arc<dyn coverwatch_domain::clock::Clock>) -> Billed {
    billed_app_configured(clock, |_| {}).await
}

async fn billed_app_configured(
    clock: Arc<dyn coverwatch_domain::clock::Clock>,
    configure: impl FnOnce(&mut coverwatch_api::Settings) + Send + 'static,
) -> Billed {
    let stripe = Localstripe::start().await;
    let front = StripeFront::start(&stripe).await;
    let base = front.base.clone();
    let app = spawn_app_with(clock, move |settings| {
        settings.stripe.secret_key = Some(SECRET_KEY.to_owned().into());
        settings.stripe.webhook_secret = Some(WEBHOOK_SECRET.to_owned().into());
        settings.stripe.api_base = Some(base);
        settings.subscribers.settle_interval_ms = 100;
        configure(settings);
    })
    .await;
    Billed { app, stripe, front }
}

async fn billed_app() -> Billed {
    billed_app_with(Arc::new(SystemClock)).await
}

async fn subscription(app: &TestApp, tenant: &TestTenant) -> Value {
    expect_status(
        app.get(&format!("/v1/tenants/{}/subscription", tenant.id), &tenant.key)
            .await,
        StatusCode::OK,
    )
    .await
}

async fn deliver(app: &TestApp, body: &str, signature: &str) -> reqwest::Response {
    app.request(Method::POST, "/v1/webhooks/stripe", None)
        .header("stripe-signature", signature)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
}

async fn deliver_signed(app: &TestApp, body: &str) -> Value {
    let signature = sign(body, WEBHOOK_SECRET, Utc::now().timestamp());
    expect_status(deliver(app, body, &signature).await, StatusCode::OK).await
}

async fn wait_for(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + std::time::Duration::from_secs(20);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// `POST /v1/tenants/{id}/subscription/{action}` as the tenant's owner.
async fn subscribe_action(app: &TestApp, tenant: &TestTenant, action: &str, body: Value) -> reqwest::Response {
    app.post(
        &format!("/v1/tenants/{}/subscription/{action}", tenant.id),
        &tenant.key,
        body,
    )
    .await
}

/// Checkout through the API; returns the Stripe customer Coverwatch created.
async fn checkout(billed: &Billed, tenant: &TestTenant, tier: &str, cycle: &str) -> (Value, String) {
    let session = expect_status(
        subscribe_action(&billed.app, tenant, "checkout", json!({"tier": tier, "cycle": cycle})).await,
        StatusCode::CREATED,
    )
    .await;
    let recorded = billed.front.recorded();
    let customer = recorded.last().unwrap().form["customer"].clone();
    (session, customer)
}

async fn count(app: &TestApp, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(&app.pool).await.unwrap()
}

#[tokio::test]
async fn plans_come_from_the_catalog_and_a_new_tenant_is_free_and_active() {
    let app = spawn_app().await;
    let plans = expect_status(
        app.request(Method::GET, "/v1/plans", None).send().await.unwrap(),
        StatusCode::OK,
    )
    .await;
    let tiers: Vec<&str> = plans["plans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["tier"].as_str().unwrap())
        .collect();
    assert_eq!(
        tiers,
        ["FREE", "INDIVIDUAL", "PRO", "ENTERPRISE"],
        "the retired tier is not sold"
    );
    let pro = &plans["plans"][2];
    assert_eq!(pro["monthly_price_cents"], 25000);
    assert_eq!(pro["entitlements"]["max_accounts"], 500);
    assert_eq!(
        plans["plans"][3]["entitlements"]["max_members"],
        Value::Null,
        "unlimited"
    );

    let tenant = app.create_free_tenant("fresh-free").await;
    let sub = subscription(&app, &tenant).await;
    assert_eq!(sub["tier"], "FREE");
    assert_eq!(sub["status"], "active");
    assert_eq!(sub["entitlements"]["max_members"], 1);
    assert_eq!(sub["entitlements"]["org_features"], false);
    assert_eq!(sub["entitlements"]["history_retention_days"], 30);
    let created = count(
        &app,
        "SELECT count(*) FROM events WHERE aggregate_type = 'subscription' AND event_type = 'SubscriptionCreated'",
    )
    .await;
    assert_eq!(created, 1);
}

#[tokio::test]
async fn without_a_stripe_key_paid_checkout_is_503_and_writes_nothing() {
    let app = spawn_app().await;
    let tenant = app.create_free_tenant("no-billing").await;
    let before = app.event_count().await;
    let problem = expect_status(
        subscribe_action(&app, &tenant, "checkout", json!({"tier": "PRO", "cycle": "monthly"})).await,
        StatusCode::SERVICE_UNAVAILABLE,
    )
    .await;
    assert_eq!(problem["type"], "https://coverwatch.dev/problems/unavailable");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("billing is not configured")
    );
    assert_eq!(app.event_count().await, before);
    // Everything else still works.
    assert_eq!(subscription(&app, &tenant).await["tier"], "FREE");
}

#[tokio::test]
async fn checkout_and_portal_send_stripe_the_expected_requests_and_only_the_owner_may() {
    let billed = billed_app().await;
    let app = &billed.app;
    let tenant = app.create_tenant("buyer").await;
    let (_, analyst_key) = app.add_member(&tenant, "analyst@buyer.test", "analyst").await;
    let refused = app
        .post(
            &format!("/v1/tenants/{}/subscription/checkout", tenant.id),
            &analyst_key,
            json!({"tier": "PRO", "cycle": "annual"}),
        )
        .await;
    expect_status(refused, StatusCode::FORBIDDEN).await;

    let (session, customer) = checkout(&billed, &tenant, "PRO", "annual").await;
    assert!(
        session["checkout_url"]
            .as_str()
            .unwrap()
            .starts_with("https://checkout.stripe.com/")
    );
    let request = billed.front.recorded().last().unwrap().clone();
    assert_eq!(request.path, "/v1/checkout/sessions");
    assert_eq!(
        request.authorization.as_deref(),
        Some(format!("Bearer {SECRET_KEY}").as_str())
    );
    assert_eq!(request.form["mode"], "subscription");
    assert_eq!(request.form["line_items[0][price]"], "price_pro_annual");
    assert_eq!(request.form["line_items[0][quantity]"], "1");
    assert_eq!(request.form["client_reference_id"], tenant.id);
    assert_eq!(request.form["metadata[tier]"], "PRO");
    assert!(request.form["success_url"].contains("{CHECKOUT_SESSION_ID}"));
    // The customer is real: localstripe created it, tagged with the tenant.
    let stored = billed.stripe.get(&format!("/v1/customers/{customer}")).await;
    assert_eq!(stored["metadata"]["tenant_id"], tenant.id);
    // Checkout alone changes no entitlement.
    assert_eq!(subscription(app, &tenant).await["tier"], "FREE");

    let portal = expect_status(
        subscribe_action(app, &tenant, "portal", json!({})).await,
        StatusCode::CREATED,
    )
    .await;
    assert!(
        portal["url"]
            .as_str()
            .unwrap()
            .starts_with("https://billing.stripe.com/")
    );
    let request = billed.front.recorded().last().unwrap().clone();
    assert_eq!(request.path, "/v1/billing_portal/sessions");
    assert_eq!(request.form["customer"], customer);
}

#[tokio::test]
async fn a_localstripe_subscription_reaches_the_tenant_by_its_signed_webhooks() {
    let billed = billed_app().await;
    let app = &billed.app;
    let tenant = app.create_tenant("paying").await;
    let (_, customer) = checkout(&billed, &tenant, "PRO", "monthly").await;
    billed
        .stripe
        .deliver_webhooks_to(&format!("{}/v1/webhooks/stripe", app.address))
        .await;
    let stripe_sub = billed.stripe.subscribe(&customer, "price_pro_monthly").await;
    let stripe_sub_id = stripe_sub["id"].as_str().unwrap().to_owned();

    // localstripe delivers customer.subscription.created and
    // invoice.payment_succeeded, signed with the endpoint secret.
    wait_for("the PRO subscription", async || {
        subscription(app, &tenant).await["tier"] == "PRO"
    })
    .await;
    let sub = subscription(app, &tenant).await;
    assert_eq!(sub["status"], "active");
    assert_eq!(sub["entitlements"]["max_accounts"], 500);
    assert!(sub["current_period_end"].is_string());
    wait_for("the paid invoice", async || {
        count(app, "SELECT count(*) FROM invoices WHERE status = 'paid'").await == 1
    })
    .await;
    let invoices = expect_status(
        app.get(&format!("/v1/tenants/{}/invoices", tenant.id), &tenant.key)
            .await,
        StatusCode::OK,
    )
    .await;
    let invoice = &invoices["items"][0];
    assert_eq!(invoice["amount_paid_cents"], 25000);
    assert_eq!(invoice["currency"], "usd");
    assert_eq!(invoice["subscription_id"], stripe_sub_id);

    // checkout.session.completed (never sent by localstripe): built from
    // Stripe's fixture; Coverwatch reads the subscription back from Stripe.
    let mut session = serde_json::from_str::<Value>(
        &std::fs::read_to_string(crate::helpers::workspace_root().join("tests/data/stripe/checkout_session.json"))
            .unwrap(),
    )
    .unwrap();
    session["customer"] = json!(customer);
    session["subscription"] = json!(stripe_sub_id);
    let body = event(
        "evt_checkout_done",
        "checkout.session.completed",
        Utc::now().timestamp(),
        session,
    );
    assert_eq!(deliver_signed(app, &body).await["outcome"], "applied");

    // Cancel at period end reaches Stripe; reactivate takes it back.
    let cancelled = expect_status(
        subscribe_action(app, &tenant, "cancel", json!({})).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(cancelled["cancel_at_period_end"], true);
    assert_eq!(cancelled["tier"], "PRO", "paid until the period ends");
    let at_stripe = billed.stripe.get(&format!("/v1/subscriptions/{stripe_sub_id}")).await;
    assert_eq!(at_stripe["cancel_at_period_end"], true);
    let again = subscribe_action(app, &tenant, "cancel", json!({})).await;
    expect_status(again, StatusCode::CONFLICT).await;
    let reactivated = expect_status(
        subscribe_action(app, &tenant, "reactivate", json!({})).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(reactivated["cancel_at_period_end"], false);
    let at_stripe = billed.stripe.get(&format!("/v1/subscriptions/{stripe_sub_id}")).await;
    assert_eq!(at_stripe["cancel_at_period_end"], false);

    // Downgrade at period end: Stripe gets the lower plan without proration,
    // the tier stays PRO until the period ends.
    let changed = expect_status(
        subscribe_action(
            app,
            &tenant,
            "change-plan",
            json!({"tier": "INDIVIDUAL", "cycle": "monthly"}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(changed["tier"], "PRO");
    assert_eq!(changed["scheduled_change"]["to_tier"], "INDIVIDUAL");
    assert_eq!(changed["scheduled_change"]["effective_at"], sub["current_period_end"]);
    let at_stripe = billed.stripe.get(&format!("/v1/subscriptions/{stripe_sub_id}")).await;
    assert_eq!(at_stripe["items"]["data"][0]["plan"]["id"], "price_individual_monthly");
    let update = billed.front.recorded().last().unwrap().clone();
    assert_eq!(update.path, format!("/v1/subscriptions/{stripe_sub_id}"));
    assert_eq!(
        update.form["proration_behavior"], "none",
        "the lower price starts next period"
    );

    // Stripe deletes the subscription: the tenant is on FREE, nothing deleted.
    billed
        .stripe
        .http_delete(&format!("/v1/subscriptions/{stripe_sub_id}"))
        .await;
    wait_for("the cancellation", async || {
        subscription(app, &tenant).await["tier"] == "FREE"
    })
    .await;
    assert_eq!(subscription(app, &tenant).await["status"], "cancelled");
    assert_eq!(
        count(app, "SELECT count(*) FROM invoices").await,
        1,
        "invoices are kept"
    );
}

#[tokio::test]
async fn bad_signatures_stale_timestamps_and_malformed_bodies_get_400_and_change_nothing() {
    let billed = billed_app().await;
    let app = &billed.app;
    let tenant = app.create_free_tenant("guarded").await;
    let (_, customer) = checkout(&billed, &tenant, "PRO", "monthly").await;
    let now = Utc::now().timestamp();
    let period = (now, now + 30 * 86400);
    let body = event(
        "evt_forged",
        "customer.subscription.updated",
        now,
        subscription_object("sub_forged", &customer, "price_pro_monthly", "active", period),
    );
    let before = app.event_count().await;
    let cases = [
        ("no signature", String::new()),
        ("wrong secret", sign(&body, "whsec_someone_else", now)),
        ("stale timestamp", sign(&body, WEBHOOK_SECRET, now - 400)),
        ("future timestamp", sign(&body, WEBHOOK_SECRET, now + 400)),
        ("garbage header", "t=abc,v1=zz".to_owned()),
    ];
    for (case, signature) in cases {
        let response = deliver(app, &body, &signature).await;
        let problem = expect_status(response, StatusCode::BAD_REQUEST).await;
        assert_eq!(problem["type"], "https://coverwatch.dev/problems/bad-request", "{case}");
    }
    // A body signed correctly but not a Stripe event.
    for malformed in ["{not json", r#"{"id": "evt_1"}"#] {
        let response = deliver(app, malformed, &sign(malformed, WEBHOOK_SECRET, now)).await;
        expect_status(response, StatusCode::BAD_REQUEST).await;
    }
    // A tampered body under a valid signature.
    let signature = sign(&body, WEBHOOK_SECRET, now);
    let tampered = body.replace("price_pro_monthly", "price_individual_monthly");
    expect_status(deliver(app, &tampered, &signature).await, StatusCode::BAD_REQUEST).await;
    assert_eq!(app.event_count().await, before, "nothing was written");
    assert_eq!(subscription(app, &tenant).await["tier"], "FREE");
    // Several v1 signatures: any match passes (key rotation).
    let header = format!("{},v1={}", signature, "ab".repeat(32));
    assert_eq!(
        expect_status(deliver(app, &body, &header).await, StatusCode::OK).await["outcome"],
        "applied"
    );
}

#[tokio::test]
async fn each_stripe_event_applies_once_and_late_deliveries_never_move_it_back() {
    let billed = billed_app().await;
    let app = &billed.app;
    let tenant = app.create_free_tenant("ordered").await;
    let (_, customer) = checkout(&billed, &tenant, "PRO", "monthly").await;
    let now = Utc::now().timestamp();
    let first = event(
        "evt_first",
        "customer.subscription.updated",
        now - 120,
        subscription_object(
            "sub_1",
            &customer,
            "price_individual_monthly",
            "active",
            (now - 120, now + 86400),
        ),
    );
    let second = event(
        "evt_second",
        "customer.subscription.updated",
        now - 60,
        subscription_object(
            "sub_1",
            &customer,
            "price_pro_monthly",
            "active",
            (now - 120, now + 86400),
        ),
    );
    // The newer one arrives first, twice at the same time.
    let (a, b) = tokio::join!(deliver_signed(app, &second), deliver_signed(app, &second));
    let mut outcomes = [a["outcome"].as_str().unwrap(), b["outcome"].as_str().unwrap()];
    outcomes.sort();
    assert_eq!(outcomes, ["applied", "duplicate"]);
    assert_eq!(
        count(
            app,
            "SELECT count(*) FROM events WHERE payload::text LIKE '%evt_second%'"
        )
        .await,
        1,
        "applied exactly once"
    );
    // The older state arrives late: recorded as ignored, tier unchanged.
    assert_eq!(deliver_signed(app, &first).await["outcome"], "applied");
    let sub = subscription(app, &tenant).await;
    assert_eq!(sub["tier"], "PRO");
    let ignored = count(
        app,
        "SELECT count(*) FROM events WHERE event_type = 'StripeEventIgnored' AND payload::text LIKE '%evt_first%'",
    )
    .await;
    assert_eq!(ignored, 1);

    // trial_will_end and invoice.payment_failed from the fixtures.
    let trial = event(
        "evt_trial",
        "customer.subscription.trial_will_end",
        now - 30,
        subscription_object(
            "sub_1",
            &customer,
            "price_pro_monthly",
            "active",
            (now - 120, now + 86400),
        ),
    );
    assert_eq!(deliver_signed(app, &trial).await["outcome"], "applied");
    let failed = event(
        "evt_failed",
        "invoice.payment_failed",
        now - 20,
        invoice_object("in_failed", &customer, "sub_1", "open", 25000),
    );
    assert_eq!(deliver_signed(app, &failed).await["outcome"], "applied");
    let sub = subscription(app, &tenant).await;
    assert_eq!(sub["status"], "past_due");
    assert_eq!(sub["tier"], "PRO", "Stripe is still retrying the payment");
    let paid = event(
        "evt_paid",
        "invoice.paid",
        now - 10,
        invoice_object("in_failed", &customer, "sub_1", "paid", 25000),
    );
    assert_eq!(deliver_signed(app, &paid).await["outcome"], "applied");
    assert_eq!(subscription(app, &tenant).await["status"], "active");
    let invoice = &expect_status(
        app.get(&format!("/v1/tenants/{}/invoices", tenant.id), &tenant.key)
            .await,
        StatusCode::OK,
    )
    .await["items"][0];
    assert_eq!(invoice["status"], "paid", "the newest report of an invoice wins");
    // An event type Coverwatch does not act on is acknowledged.
    let other = event("evt_other", "product.created", now, json!({"id": "prod_x"}));
    assert_eq!(deliver_signed(app, &other).await["outcome"], "ignored");
}

#[tokio::test]
async fn events_for_unknown_customers_are_acknowledged_and_kept_for_the_admin() {
    let billed = billed_app().await;
    let app = &billed.app;
    let now = Utc::now().timestamp();
    let body = event(
        "evt_stranger",
        "customer.subscription.updated",
        now,
        subscription_object("sub_x", "cus_nobody", "price_pro_monthly", "active", (now, now + 86400)),
    );
    let before = app.event_count().await;
    assert_eq!(deliver_signed(app, &body).await["outcome"], "unmatched");
    assert_eq!(deliver_signed(app, &body).await["outcome"], "unmatched");
    assert_eq!(app.event_count().await, before, "not applied to anyone");
    let unmatched = expect_status(
        app.get("/v1/admin/stripe/unmatched-events", ADMIN_TOKEN).await,
        StatusCode::OK,
    )
    .await;
    let items = unmatched["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["customer_id"], "cus_nobody");
    let tenant = app.create_tenant("not-admin").await;
    expect_status(
        app.get("/v1/admin/stripe/unmatched-events", &tenant.key).await,
        StatusCode::FORBIDDEN,
    )
    .await;
}

#[tokio::test]
async fn twenty_concurrent_invitations_for_one_free_seat_give_exactly_one_success() {
    let app = spawn_app().await;
    let tenant = app.create_free_tenant("one-seat").await;
    // FREE allows 1 member (the owner); an override leaves one free seat.
    app.set_overrides(&tenant, json!({"max_members": 2})).await;
    let path = format!("/v1/tenants/{}/invitations", tenant.id);
    let requests = (0..20).map(|i| {
        app.post(
            &path,
            &tenant.key,
            json!({"email": format!("person{i}@one-seat.test"), "role": "analyst"}),
        )
    });
    let responses = futures::future::join_all(requests).await;
    let mut created = 0;
    for response in responses {
        match response.status() {
            StatusCode::CREATED => created += 1,
            StatusCode::PAYMENT_REQUIRED => {
                let problem: Value = response.json().await.unwrap();
                assert_eq!(problem["type"], "https://coverwatch.dev/problems/plan-limit");
                assert_eq!(problem["metric"], "members");
                assert_eq!(problem["used"], 2);
                assert_eq!(problem["limit"], 2);
                assert!(problem["upgrade_url"].as_str().unwrap().contains("/billing/upgrade"));
            }
            other => panic!("unexpected {other}: {}", response.text().await.unwrap()),
        }
    }
    assert_eq!(created, 1);
    let invited = count(&app, "SELECT count(*) FROM events WHERE event_type = 'MemberInvited'").await;
    assert_eq!(invited, 1);
}

#[tokio::test]
async fn usage_meters_members_and_requests_and_records_thresholds_once_per_period() {
    let app = spawn_app().await;
    let tenant = app.create_free_tenant("metered").await;
    app.set_overrides(&tenant, json!({"max_members": 5})).await;
    for i in 0..3 {
        app.add_member(&tenant, &format!("m{i}@metered.test"), "analyst").await;
    }
    // 4 of 5 seats: 80 %. A pending invitation makes 5: 100 %.
    let invitation = expect_status(
        app.post(
            &format!("/v1/tenants/{}/invitations", tenant.id),
            &tenant.key,
            json!({"email": "pending@metered.test", "role": "analyst"}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let path = format!("/v1/tenants/{}/usage", tenant.id);
    wait_for("both thresholds", async || {
        let usage = expect_status(app.get(&path, &tenant.key).await, StatusCode::OK).await;
        usage["metrics"]["members"]["thresholds_crossed"] == json!([80, 100])
    })
    .await;
    let usage = expect_status(app.get(&path, &tenant.key).await, StatusCode::OK).await;
    let members = &usage["metrics"]["members"];
    assert_eq!(members["used"], 5);
    assert_eq!(members["limit"], 5);
    assert_eq!(members["percent"], 100.0);
    assert_eq!(usage["metrics"]["cloud_accounts"]["limit"], 1);
    assert!(usage["period_start"].as_str().unwrap().ends_with("-01T00:00:00Z"));
    let requests = usage["metrics"]["api_requests"]["used"].as_u64().unwrap();
    assert!(requests >= 5, "authenticated requests are metered: {requests}");
    assert_eq!(usage["metrics"]["api_requests"]["limit"], Value::Null);

    // Seats freed and taken again in the same period: no second record.
    let id = invitation["id"].as_str().unwrap();
    expect_status(
        app.delete(&format!("/v1/tenants/{}/invitations/{id}", tenant.id), &tenant.key)
            .await,
        StatusCode::NO_CONTENT,
    )
    .await;
    expect_status(
        app.post(
            &format!("/v1/tenants/{}/invitations", tenant.id),
            &tenant.key,
            json!({"email": "again@metered.test", "role": "analyst"}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    app.caught_up(None, std::time::Duration::from_secs(10)).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    app.caught_up(None, std::time::Duration::from_secs(10)).await;
    let recorded = count(
        &app,
        "SELECT count(*) FROM events WHERE event_type = 'UsageThresholdCrossed'",
    )
    .await;
    assert_eq!(recorded, 2, "80 % and 100 %, each once in the period");

    // Requests that repeat an X-Request-Id are each metered.
    let before =
        expect_status(app.get(&path, &tenant.key).await, StatusCode::OK).await["metrics"]["api_requests"]["used"]
            .as_u64()
            .unwrap();
    for _ in 0..3 {
        app.request(Method::GET, &format!("/v1/tenants/{}", tenant.id), Some(&tenant.key))
            .header("x-request-id", "retried-request-1")
            .send()
            .await
            .unwrap();
    }
    let after =
        expect_status(app.get(&path, &tenant.key).await, StatusCode::OK).await["metrics"]["api_requests"]["used"]
            .as_u64()
            .unwrap();
    assert_eq!(
        after,
        before + 4,
        "the usage read itself, plus each of the three requests: a client that repeats its \
         X-Request-Id is still metered per request (the id is only for correlation)"
    );
    // The client's id stays with the events and the audit trail for correlation.
    let correlated: i64 =
        sqlx::query_scalar("SELECT count(*) FROM api_requests WHERE client_request_id = 'retried-request-1'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(correlated, 3);
}

#[tokio::test]
async fn the_api_rate_of_the_plan_is_enforced_per_tenant_with_retry_after() {
    let app = spawn_app().await;
    let limited = app.create_free_tenant("limited").await;
    let other = app.create_free_tenant("unaffected").await;
    app.set_overrides(&limited, json!({"api_rate_per_minute": 5})).await;
    let mut statuses = vec![];
    for _ in 0..8 {
        let response = app.get(&format!("/v1/tenants/{}", limited.id), &limited.key).await;
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            let retry_after: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
            assert!((1..=60).contains(&retry_after));
            let problem: Value = response.json().await.unwrap();
            assert_eq!(problem["type"], "https://coverwatch.dev/problems/rate-limited");
            statuses.push(429);
        } else {
            statuses.push(response.status().as_u16());
        }
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429, 429, 429]);
    // Another tenant's budget is its own.
    expect_status(
        app.get(&format!("/v1/tenants/{}", other.id), &other.key).await,
        StatusCode::OK,
    )
    .await;
}

#[tokio::test]
async fn admin_overrides_win_over_the_tier_and_null_removes_them() {
    let app = spawn_app().await;
    let tenant = app.create_free_tenant("special-deal").await;
    let put = |body: Value| {
        app.request(
            Method::PUT,
            &format!("/v1/admin/tenants/{}/overrides", tenant.id),
            Some(ADMIN_TOKEN),
        )
        .json(&body)
        .send()
    };
    let view = expect_status(
        put(json!({"max_accounts": "unlimited", "org_features": true, "history_retention_days": 400}))
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(view["tier"], "FREE");
    assert_eq!(view["entitlements"]["max_accounts"], Value::Null);
    assert_eq!(view["entitlements"]["org_features"], true);
    assert_eq!(view["entitlements"]["history_retention_days"], 400);
    let view = expect_status(put(json!({"org_features": null})).await.unwrap(), StatusCode::OK).await;
    assert_eq!(
        view["entitlements"]["org_features"], false,
        "removed: the tier's value again"
    );
    assert_eq!(
        view["entitlements"]["max_accounts"],
        Value::Null,
        "untouched fields stay"
    );
    expect_status(
        put(json!({"max_members": -1})).await.unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    expect_status(
        put(json!({"colour": "blue"})).await.unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    let members_cannot = app
        .request(
            Method::PUT,
            &format!("/v1/admin/tenants/{}/overrides", tenant.id),
            Some(&tenant.key),
        )
        .json(&json!({"max_members": 100}))
        .send()
        .await
        .unwrap();
    expect_status(members_cannot, StatusCode::FORBIDDEN).await;

    let free = expect_status(
        app.get("/v1/admin/subscriptions?tier=FREE&status=active", ADMIN_TOKEN)
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(free["items"].as_array().unwrap().len(), 1);
    let pro = expect_status(
        app.get("/v1/admin/subscriptions?tier=PRO", ADMIN_TOKEN).await,
        StatusCode::OK,
    )
    .await;
    assert!(pro["items"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn mrr_counts_paying_subscriptions_by_tier_from_the_read_model() {
    let billed = billed_app().await;
    let app = &billed.app;
    let now = Utc::now().timestamp();
    let mut expected = 0;
    for (slug, price, amount) in [
        ("mrr-pro-1", "price_pro_monthly", 25000),
        ("mrr-pro-2", "price_pro_annual", 250000 / 12),
        ("mrr-ind", "price_individual_monthly", 2900),
    ] {
        let tenant = app.create_free_tenant(slug).await;
        let (_, customer) = checkout(&billed, &tenant, "PRO", "monthly").await;
        let body = event(
            &format!("evt_{slug}"),
            "customer.subscription.updated",
            now,
            subscription_object(&format!("sub_{slug}"), &customer, price, "active", (now, now + 86400)),
        );
        deliver_signed(app, &body).await;
        expected += amount;
    }
    app.create_free_tenant("mrr-free").await;
    let mrr = expect_status(app.get("/v1/admin/mrr", ADMIN_TOKEN).await, StatusCode::OK).await;
    assert_eq!(mrr["by_tier"]["PRO"]["subscriptions"], 2);
    assert_eq!(mrr["by_tier"]["INDIVIDUAL"]["mrr_cents"], 2900);
    assert_eq!(mrr["mrr_cents"], expected);
    assert!(mrr["by_tier"].get("FREE").is_none());
}

#[tokio::test]
async fn a_legacy_tenant_keeps_its_limits_for_three_months_then_falls_to_free() {
    let clock = ManualClock::at(Utc::now());
    let app = spawn_app_with(Arc::new(clock.clone()), |settings| {
        settings.subscribers.settle_interval_ms = 100
    })
    .await;
    let tenant = app.create_free_tenant("legacy-co").await;
    let migrated = expect_status(
        app.request(
            Method::POST,
            &format!("/v1/admin/tenants/{}/subscription/legacy-migration", tenant.id),
            Some(ADMIN_TOKEN),
        )
        .send()
        .await
        .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(migrated["tier"], "SUBSCRIBER");
    assert_eq!(migrated["entitlements"]["max_members"], 5);
    // Its old limits hold: four more members fit.
    for i in 0..4 {
        app.add_member(&tenant, &format!("old{i}@legacy.test"), "analyst").await;
    }
    clock.advance(Duration::days(85));
    assert_eq!(subscription(&app, &tenant).await["tier"], "SUBSCRIBER");
    clock.advance(Duration::days(8));
    // The grace period is over: FREE, recorded in the log by the sweeper.
    assert_eq!(subscription(&app, &tenant).await["tier"], "FREE");
    wait_for("the recorded end of grace", async || {
        count(
            &app,
            "SELECT count(*) FROM events WHERE event_type = 'LegacyGraceEnded'",
        )
        .await
            == 1
    })
    .await;
    // Nothing is deleted, but writes beyond FREE's limits are refused.
    let members = expect_status(
        app.get(&format!("/v1/tenants/{}/members", tenant.id), &tenant.key)
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(members["items"].as_array().unwrap().len(), 5);
    let refused = app
        .post(
            &format!("/v1/tenants/{}/invitations", tenant.id),
            &tenant.key,
            json!({"email": "new@legacy.test", "role": "analyst"}),
        )
        .await;
    let problem = expect_status(refused, StatusCode::PAYMENT_REQUIRED).await;
    assert_eq!(
        (problem["used"].as_u64(), problem["limit"].as_u64()),
        (Some(5), Some(1))
    );
}

#[tokio::test]
async fn a_cancellation_falls_to_free_when_the_period_ends() {
    let clock = ManualClock::at(Utc::now());
    let billed = billed_app_with(Arc::new(clock.clone())).await;
    let app = &billed.app;
    let tenant = app.create_free_tenant("leaving").await;
    let (_, customer) = checkout(&billed, &tenant, "PRO", "monthly").await;
    let stripe_sub = billed.stripe.subscribe(&customer, "price_pro_monthly").await;
    let now = Utc::now().timestamp();
    let end = stripe_sub["current_period_end"].as_i64().unwrap();
    let body = event(
        "evt_subscribed",
        "customer.subscription.created",
        now,
        subscription_object(
            stripe_sub["id"].as_str().unwrap(),
            &customer,
            "price_pro_monthly",
            "active",
            (now, end),
        ),
    );
    deliver_signed(app, &body).await;
    assert_eq!(subscription(app, &tenant).await["tier"], "PRO");
    // Downgrading below what is in use is refused, with the reason.
    for i in 0..3 {
        app.add_member(&tenant, &format!("p{i}@leaving.test"), "analyst").await;
    }
    let refused = expect_status(
        subscribe_action(app, &tenant, "change-plan", json!({"tier": "INDIVIDUAL"})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert!(
        refused["detail"]
            .as_str()
            .unwrap()
            .contains("members: 4 in use, the INDIVIDUAL tier allows 3")
    );

    expect_status(
        subscribe_action(app, &tenant, "cancel", json!({})).await,
        StatusCode::OK,
    )
    .await;
    clock.advance(Duration::days(32));
    assert_eq!(subscription(app, &tenant).await["tier"], "FREE");
    wait_for("the recorded cancellation", async || {
        count(
            app,
            "SELECT count(*) FROM events WHERE event_type = 'CancellationTookEffect'",
        )
        .await
            == 1
    })
    .await;
    let refused = app
        .post(
            &format!("/v1/tenants/{}/invitations", tenant.id),
            &tenant.key,
            json!({"email": "late@leaving.test", "role": "analyst"}),
        )
        .await;
    expect_status(refused, StatusCode::PAYMENT_REQUIRED).await;
}

/// Metered requests are kept only as long as a usage period reports them.
#[tokio::test]
async fn metered_requests_older_than_any_reported_period_are_pruned() {
    let app = spawn_app_with(Arc::new(coverwatch_domain::clock::SystemClock), |settings| {
        settings.subscribers.settle_interval_ms = 100
    })
    .await;
    let tenant = app.create_free_tenant("pruned").await;
    sqlx::query(
        "INSERT INTO api_requests (tenant_id, request_id, at) VALUES
            ($1::uuid, 'ancient', now() - interval '401 days'), ($1::uuid, 'last-year', now() - interval '300 days')",
    )
    .bind(&tenant.id)
    .execute(&app.pool)
    .await
    .unwrap();
    wait_for("the ancient request pruned", async || {
        let left: Vec<String> =
            sqlx::query_scalar("SELECT request_id FROM api_requests WHERE request_id IN ('ancient', 'last-year')")
                .fetch_all(&app.pool)
                .await
                .unwrap();
        left == ["last-year"]
    })
    .await;
}

/// The n-th of the k! orders of 0..k (n read as a Lehmer code).
fn nth_order(mut n: usize, k: usize) -> Vec<usize> {
    let mut left: Vec<usize> = (0..k).collect();
    let mut order = vec![];
    for base in (1..=k).rev() {
        let orders_after: usize = (1..base).product();
        order.push(left.remove(n / orders_after));
        n %= orders_after;
    }
    order
}

/// Stripe delivers in any order and retries for days: a subscription's life
/// (created; a renewal that fails; past due; the invoice paid late; then
/// deleted), delivered in every one of its 120 orders (a tenant each),
/// always ends as Stripe has it: FREE and cancelled, the invoice paid. A
/// deletion delivered first is never undone by the older facts after it.
#[tokio::test]
async fn stripe_facts_in_any_delivery_order_end_in_stripes_state() {
    // A tenant per order, all signed up from here.
    let billed = billed_app_configured(Arc::new(SystemClock), |s| s.http.signups_per_hour = 1000).await;
    let app = &billed.app;
    let now = Utc::now().timestamp() - 3600;
    let facts = |customer: &str, n: usize| -> Vec<String> {
        let sub = format!("sub_life_{n}");
        let period = (now, now + 30 * 86400);
        let invoice = format!("in_renewal_{n}");
        vec![
            event(
                &format!("evt_created_{n}"),
                "customer.subscription.created",
                now,
                subscription_object(&sub, customer, "price_pro_monthly", "active", period),
            ),
            event(
                &format!("evt_failed_{n}"),
                "invoice.payment_failed",
                now + 60,
                invoice_object(&invoice, customer, &sub, "open", 25000),
            ),
            event(
                &format!("evt_past_due_{n}"),
                "customer.subscription.updated",
                now + 61,
                subscription_object(&sub, customer, "price_pro_monthly", "past_due", period),
            ),
            event(
                &format!("evt_paid_{n}"),
                "invoice.paid",
                now + 180,
                invoice_object(&invoice, customer, &sub, "paid", 25000),
            ),
            event(
                &format!("evt_deleted_{n}"),
                "customer.subscription.deleted",
                now + 240,
                subscription_object(&sub, customer, "price_pro_monthly", "canceled", period),
            ),
        ]
    };
    let orders: Vec<Vec<usize>> = (0..120).map(|n| nth_order(n, 5)).collect();
    assert_eq!(orders.iter().collect::<std::collections::BTreeSet<_>>().len(), 120);
    let mut tenants = vec![];
    let mut bodies = vec![];
    for (n, order) in orders.iter().enumerate() {
        let tenant = app.create_free_tenant(&format!("order-{n}")).await;
        let (_, customer) = checkout(&billed, &tenant, "PRO", "monthly").await;
        let all = facts(&customer, n);
        bodies.extend(order.iter().map(|&i| all[i].clone()));
        tenants.push(tenant);
    }
    let signatures = sign_many(&bodies, WEBHOOK_SECRET, Utc::now().timestamp());
    for (body, signature) in bodies.iter().zip(&signatures) {
        expect_status(deliver(app, body, signature).await, StatusCode::OK).await;
    }
    let mut seen = std::collections::BTreeSet::new();
    for tenant in &tenants {
        let mut sub = subscription(app, tenant).await;
        assert_eq!(
            (sub["tier"].as_str(), sub["status"].as_str()),
            (Some("FREE"), Some("cancelled")),
            "{sub}"
        );
        let invoices = expect_status(
            app.get(&format!("/v1/tenants/{}/invoices", tenant.id), &tenant.key)
                .await,
            StatusCode::OK,
        )
        .await;
        assert_eq!(
            invoices["items"][0]["status"], "paid",
            "the newest report of the invoice"
        );
        for field in ["tenant_id", "stripe_customer_id", "version"] {
            sub.as_object_mut().unwrap().remove(field);
        }
        seen.insert(sub.to_string());
    }
    assert_eq!(seen.len(), 1, "every order ends in the same state: {seen:#?}");
}
