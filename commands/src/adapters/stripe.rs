//! Stripe: the API client (async-stripe's, pointed at `STRIPE_API_BASE` in
//! tests) with its typed checkout and billing portal sessions, webhook
//! signature verification, and lenient models for customers, subscriptions
//! and invoices (async-stripe's generated models require fields that
//! localstripe's older objects lack) that turn Stripe's objects, from API
//! responses or webhook bodies, into the Subscription aggregate's
//! [`StripeFact`]s.

use chrono::{DateTime, TimeZone, Utc};
use coverwatch_domain::ids::TenantId;
use coverwatch_domain::plans::{BillingCycle, PlanCatalog, Tier};
use coverwatch_domain::subscription::{
    BillingGateway, InvoiceRecord, StripeChange, StripeFact, StripeSubscriptionState, SubscriptionStatus,
};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;
use std::collections::{BTreeMap, HashMap};
use stripe_billing::billing_portal_session::CreateBillingPortalSession;
use stripe_checkout::checkout_session::{CreateCheckoutSession, CreateCheckoutSessionLineItems};
use stripe_client_core::{RequestBuilder, StripeMethod};

/// A Stripe call that failed (network, API error, or an unreadable answer).
#[derive(Debug, thiserror::Error)]
#[error("Stripe: {0}")]
pub struct StripeCallError(String);

#[derive(Clone)]
pub struct StripeClient {
    client: stripe::Client,
}

/// A checkout session as Coverwatch needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckoutSession {
    pub id: String,
    pub url: String,
}

impl StripeClient {
    /// `api_base` (e.g. `http://127.0.0.1:8420/`) replaces https://api.stripe.com/.
    pub fn new(secret_key: &str, api_base: Option<&str>) -> Result<Self, StripeCallError> {
        let mut builder = stripe::ClientBuilder::new(secret_key);
        if let Some(base) = api_base {
            let base = if base.ends_with('/') {
                base.to_owned()
            } else {
                format!("{base}/")
            };
            builder = builder.url(base);
        }
        let client = builder.build().map_err(|e| StripeCallError(e.to_string()))?;
        Ok(Self { client })
    }

    /// One API call; the answer is read as JSON and parsed by our models.
    async fn call(
        &self,
        method: StripeMethod,
        path: &str,
        form: &[(String, String)],
    ) -> Result<serde_json::Value, StripeCallError> {
        let mut request = RequestBuilder::new(method, path);
        if !form.is_empty() {
            let form: BTreeMap<&str, &str> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            request = match method {
                StripeMethod::Get => request.query(&form),
                _ => request.form(&form),
            };
        }
        let value: miniserde::json::Value = request
            .customize()
            .send(&self.client)
            .await
            .map_err(|e| StripeCallError(e.to_string()))?;
        serde_json::from_str(&miniserde::json::to_string(&value)).map_err(|e| StripeCallError(e.to_string()))
    }

    fn parse<T: for<'de> Deserialize<'de>>(value: serde_json::Value, what: &str) -> Result<T, StripeCallError> {
        serde_json::from_value(value).map_err(|e| StripeCallError(format!("unexpected {what}: {e}")))
    }

    pub async fn create_customer(
        &self,
        tenant_id: TenantId,
        name: &str,
        email: Option<&str>,
    ) -> Result<String, StripeCallError> {
        let mut form = vec![
            ("name".to_owned(), name.to_owned()),
            ("metadata[tenant_id]".to_owned(), tenant_id.to_string()),
        ];
        if let Some(email) = email {
            form.push(("email".to_owned(), email.to_owned()));
        }
        let customer: IdOnly = Self::parse(self.call(StripeMethod::Post, "/customers", &form).await?, "customer")?;
        Ok(customer.id)
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "a Checkout session's parameters, each sent to Stripe"
    )]
    pub async fn create_checkout_session(
        &self,
        tenant_id: TenantId,
        customer_id: &str,
        price_id: &str,
        tier: Tier,
        cycle: BillingCycle,
        success_url: &str,
        cancel_url: &str,
    ) -> Result<CheckoutSession, StripeCallError> {
        let cycle = match cycle {
            BillingCycle::Monthly => "monthly",
            BillingCycle::Annual => "annual",
        };
        let mut item = CreateCheckoutSessionLineItems::new();
        item.price = Some(price_id.to_owned());
        item.quantity = Some(1);
        let metadata = HashMap::from([
            ("tenant_id".to_owned(), tenant_id.to_string()),
            ("tier".to_owned(), tier.to_string()),
            ("cycle".to_owned(), cycle.to_owned()),
        ]);
        let session = CreateCheckoutSession::new()
            .mode(stripe_checkout::CheckoutSessionMode::Subscription)
            .customer(customer_id)
            .client_reference_id(tenant_id.to_string())
            .line_items(vec![item])
            .success_url(success_url)
            .cancel_url(cancel_url)
            .metadata(metadata)
            .send(&self.client)
            .await
            .map_err(|e| StripeCallError(e.to_string()))?;
        Ok(CheckoutSession {
            url: session
                .url
                .ok_or_else(|| StripeCallError("the checkout session has no url".into()))?,
            id: session.id.to_string(),
        })
    }

    pub async fn create_portal_session(&self, customer_id: &str, return_url: &str) -> Result<String, StripeCallError> {
        let session = CreateBillingPortalSession::new()
            .customer(customer_id)
            .return_url(return_url)
            .send(&self.client)
            .await
            .map_err(|e| StripeCallError(e.to_string()))?;
        Ok(session.url)
    }

    pub async fn retrieve_subscription(&self, subscription_id: &str) -> Result<SubscriptionObject, StripeCallError> {
        let path = format!("/subscriptions/{subscription_id}");
        Self::parse(self.call(StripeMethod::Get, &path, &[]).await?, "subscription")
    }
}

#[async_trait::async_trait]
impl BillingGateway for StripeClient {
    async fn set_cancel_at_period_end(&self, subscription_id: &str, cancel: bool) -> Result<(), String> {
        let form = [("cancel_at_period_end".to_owned(), cancel.to_string())];
        self.call(StripeMethod::Post, &format!("/subscriptions/{subscription_id}"), &form)
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    }

    async fn change_price(&self, subscription_id: &str, price_id: &str, prorate: bool) -> Result<(), String> {
        let current = self
            .retrieve_subscription(subscription_id)
            .await
            .map_err(|e| e.to_string())?;
        let item = current
            .items
            .data
            .first()
            .ok_or_else(|| "the subscription has no item".to_owned())?;
        // `plan` is the item's price under its older name: Stripe accepts
        // both for prices created as plans, localstripe only this one.
        let form = [
            ("items[0][id]", item.id.clone()),
            ("items[0][plan]", price_id.to_owned()),
            (
                "proration_behavior",
                if prorate { "create_prorations" } else { "none" }.to_owned(),
            ),
        ]
        .map(|(k, v)| (k.to_owned(), v));
        self.call(StripeMethod::Post, &format!("/subscriptions/{subscription_id}"), &form)
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    }
}

#[derive(Deserialize)]
struct IdOnly {
    id: String,
}

/// Stripe's `customer` fields: an id, or the expanded object.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Expandable {
    Id(String),
    Object { id: String },
}

impl Expandable {
    pub fn id(&self) -> &str {
        match self {
            Expandable::Id(id) | Expandable::Object { id } => id,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct PriceObject {
    pub id: String,
    #[serde(default)]
    pub unit_amount: Option<i64>,
    #[serde(default)]
    pub amount: Option<i64>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SubscriptionItemObject {
    pub id: String,
    #[serde(default)]
    pub price: Option<PriceObject>,
    #[serde(default)]
    pub plan: Option<PriceObject>,
    #[serde(default)]
    pub quantity: Option<u64>,
    #[serde(default)]
    pub current_period_start: Option<i64>,
    #[serde(default)]
    pub current_period_end: Option<i64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ItemList {
    #[serde(default)]
    pub data: Vec<SubscriptionItemObject>,
}

/// A Stripe subscription; periods sit on the subscription in older API
/// versions and on its items in newer ones, so both are read.
#[derive(Debug, Clone, Deserialize)]
pub struct SubscriptionObject {
    pub id: String,
    pub customer: Expandable,
    pub status: String,
    #[serde(default)]
    pub cancel_at_period_end: bool,
    #[serde(default)]
    pub current_period_start: Option<i64>,
    #[serde(default)]
    pub current_period_end: Option<i64>,
    #[serde(default)]
    pub trial_end: Option<i64>,
    #[serde(default)]
    pub items: ItemList,
}

impl SubscriptionObject {
    pub fn to_state(&self, catalog: &PlanCatalog) -> Result<StripeSubscriptionState, WebhookError> {
        let status = SubscriptionStatus::from_stripe(&self.status)
            .ok_or_else(|| WebhookError::Malformed(format!("unknown subscription status {:?}", self.status)))?;
        let item = self.items.data.first();
        let price = item.and_then(|item| item.price.as_ref().or(item.plan.as_ref()));
        let quantity = item.and_then(|item| item.quantity).unwrap_or(1);
        Ok(StripeSubscriptionState {
            subscription_id: self.id.clone(),
            customer_id: self.customer.id().to_owned(),
            status,
            plan: price.and_then(|price| catalog.tier_for_price(&price.id)),
            amount_cents: price
                .and_then(|price| price.unit_amount.or(price.amount))
                .and_then(|cents| u64::try_from(cents).ok())
                .map(|cents| cents * quantity),
            current_period_start: self
                .current_period_start
                .or(item.and_then(|i| i.current_period_start))
                .and_then(timestamp),
            current_period_end: self
                .current_period_end
                .or(item.and_then(|i| i.current_period_end))
                .and_then(timestamp),
            cancel_at_period_end: self.cancel_at_period_end,
            trial_end: self.trial_end.and_then(timestamp),
        })
    }
}

fn timestamp(seconds: i64) -> Option<DateTime<Utc>> {
    Utc.timestamp_opt(seconds, 0).single()
}

#[derive(Debug, Clone, Deserialize)]
struct CheckoutSessionObject {
    id: String,
    customer: Option<Expandable>,
    subscription: Option<Expandable>,
}

#[derive(Debug, Clone, Deserialize)]
struct SubscriptionDetails {
    subscription: Option<Expandable>,
}

#[derive(Debug, Clone, Deserialize)]
struct InvoiceParent {
    subscription_details: Option<SubscriptionDetails>,
}

#[derive(Debug, Clone, Deserialize)]
struct InvoiceObject {
    id: String,
    customer: Option<Expandable>,
    #[serde(default)]
    number: Option<String>,
    #[serde(default)]
    subscription: Option<Expandable>,
    #[serde(default)]
    parent: Option<InvoiceParent>,
    #[serde(default)]
    status: Option<String>,
    currency: String,
    amount_due: i64,
    amount_paid: i64,
    #[serde(default)]
    hosted_invoice_url: Option<String>,
    #[serde(default)]
    invoice_pdf: Option<String>,
    #[serde(default)]
    period_start: Option<i64>,
    #[serde(default)]
    period_end: Option<i64>,
}

impl InvoiceObject {
    fn record(self) -> InvoiceRecord {
        let subscription = self
            .subscription
            .or(self
                .parent
                .and_then(|p| p.subscription_details)
                .and_then(|d| d.subscription))
            .map(|s| s.id().to_owned());
        InvoiceRecord {
            invoice_id: self.id,
            number: self.number,
            subscription_id: subscription,
            status: self.status.unwrap_or_else(|| "unknown".into()),
            currency: self.currency,
            amount_due_cents: self.amount_due,
            amount_paid_cents: self.amount_paid,
            hosted_invoice_url: self.hosted_invoice_url,
            invoice_pdf: self.invoice_pdf,
            period_start: self.period_start.and_then(timestamp),
            period_end: self.period_end.and_then(timestamp),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
struct EventData {
    object: serde_json::Value,
}

/// The envelope of every webhook event.
#[derive(Debug, Clone, Deserialize)]
pub struct EventEnvelope {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub created: i64,
    data: EventData,
}

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("missing or malformed Stripe-Signature header")]
    MissingSignature,
    #[error("the signature timestamp is outside the 5-minute tolerance")]
    Stale,
    #[error("no signature matches the payload")]
    BadSignature,
    #[error("malformed event: {0}")]
    Malformed(String),
}

/// How far a signature's timestamp may be from now, either way.
pub const SIGNATURE_TOLERANCE_SECONDS: i64 = 300;

/// Checks the `Stripe-Signature` header (`t=..,v1=..[,v1=..]`): HMAC-SHA256
/// over `{t}.{body}` keyed with the whole endpoint secret; any `v1` may match.
/// Timestamps more than 5 minutes from `now`, in the past or the future, are
/// refused (a replayed or forged-late delivery).
pub fn verify_signature(header: &str, body: &[u8], secret: &str, now: DateTime<Utc>) -> Result<(), WebhookError> {
    let mut timestamp = None;
    let mut signatures = vec![];
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => timestamp = t.parse::<i64>().ok(),
            Some(("v1", signature)) => signatures.push(signature),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(WebhookError::MissingSignature)?;
    if signatures.is_empty() {
        return Err(WebhookError::MissingSignature);
    }
    if (now.timestamp() - timestamp).abs() > SIGNATURE_TOLERANCE_SECONDS {
        return Err(WebhookError::Stale);
    }
    let signed = |signature: &str| {
        let Ok(expected) = hex::decode(signature) else {
            return false;
        };
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac.verify_slice(&expected).is_ok()
    };
    if signatures.into_iter().any(signed) {
        Ok(())
    } else {
        Err(WebhookError::BadSignature)
    }
}

/// What a verified webhook body asks of Coverwatch.
pub enum Interpreted {
    /// Apply to the subscription of the tenant that owns `customer_id`.
    Apply { customer_id: String, change: StripeChange },
    /// A checkout completed: the subscription must be read from Stripe.
    CheckoutCompleted {
        customer_id: String,
        session_id: String,
        subscription_id: String,
    },
    /// Not a type Coverwatch acts on.
    Ignored,
}

impl EventEnvelope {
    pub fn parse(body: &[u8]) -> Result<Self, WebhookError> {
        serde_json::from_slice(body).map_err(|e| WebhookError::Malformed(e.to_string()))
    }

    pub fn created_at(&self) -> Result<DateTime<Utc>, WebhookError> {
        timestamp(self.created).ok_or_else(|| WebhookError::Malformed("bad created timestamp".into()))
    }

    fn object<T: for<'de> Deserialize<'de>>(&self) -> Result<T, WebhookError> {
        serde_json::from_value(self.data.object.clone())
            .map_err(|e| WebhookError::Malformed(format!("{} object: {e}", self.kind)))
    }

    pub fn change(&self, fact: StripeFact) -> Result<StripeChange, WebhookError> {
        Ok(StripeChange {
            event_id: self.id.clone(),
            event_type: self.kind.clone(),
            event_created: self.created_at()?,
            fact,
        })
    }

    pub fn interpret(&self, catalog: &PlanCatalog) -> Result<Interpreted, WebhookError> {
        self.created_at()?;
        let kind = self.kind.as_str();
        let interpreted = match kind {
            "checkout.session.completed" => {
                let session: CheckoutSessionObject = self.object()?;
                let (Some(customer), Some(subscription)) = (session.customer, session.subscription) else {
                    // A one-off payment session: nothing to do with plans.
                    return Ok(Interpreted::Ignored);
                };
                Interpreted::CheckoutCompleted {
                    customer_id: customer.id().to_owned(),
                    session_id: session.id,
                    subscription_id: subscription.id().to_owned(),
                }
            }
            "customer.subscription.created"
            | "customer.subscription.updated"
            | "customer.subscription.deleted"
            | "customer.subscription.trial_will_end" => {
                let object: SubscriptionObject = self.object()?;
                let state = object.to_state(catalog)?;
                let fact = match kind {
                    "customer.subscription.deleted" => StripeFact::SubscriptionDeleted(state.clone()),
                    "customer.subscription.trial_will_end" => StripeFact::TrialWillEnd {
                        subscription_id: state.subscription_id.clone(),
                        trial_end: state.trial_end,
                    },
                    _ => StripeFact::SubscriptionChanged(state.clone()),
                };
                Interpreted::Apply {
                    customer_id: state.customer_id,
                    change: self.change(fact)?,
                }
            }
            // invoice.payment_succeeded is what localstripe (and older API
            // versions) send for a paid invoice.
            "invoice.paid" | "invoice.payment_succeeded" | "invoice.payment_failed" => {
                let invoice: InvoiceObject = self.object()?;
                let Some(customer) = invoice.customer.clone() else {
                    return Err(WebhookError::Malformed("the invoice has no customer".into()));
                };
                let record = invoice.record();
                let fact = if kind == "invoice.payment_failed" {
                    StripeFact::InvoicePaymentFailed(record)
                } else {
                    StripeFact::InvoicePaid(record)
                };
                Interpreted::Apply {
                    customer_id: customer.id().to_owned(),
                    change: self.change(fact)?,
                }
            }
            _ => Interpreted::Ignored,
        };
        Ok(interpreted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(secret: &str, t: i64, body: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("{t}.{body}").as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    #[test]
    fn any_matching_v1_signature_within_tolerance_passes() {
        let now = Utc::now();
        let t = now.timestamp() - 60;
        let good = sign("whsec_test", t, "{}");
        let header = format!("t={t},v1={},v0=ignored,v1={good}", "00".repeat(32));
        assert!(verify_signature(&header, b"{}", "whsec_test", now).is_ok());
        assert!(matches!(
            verify_signature(&header, b"{ }", "whsec_test", now),
            Err(WebhookError::BadSignature)
        ));
        assert!(matches!(
            verify_signature(&header, b"{}", "whsec_other", now),
            Err(WebhookError::BadSignature)
        ));
    }

    #[test]
    fn timestamps_beyond_five_minutes_are_refused_both_ways() {
        let now = Utc::now();
        for t in [now.timestamp() - 301, now.timestamp() + 301] {
            let header = format!("t={t},v1={}", sign("whsec_test", t, "{}"));
            assert!(matches!(
                verify_signature(&header, b"{}", "whsec_test", now),
                Err(WebhookError::Stale)
            ));
        }
        let t = now.timestamp() - 300;
        let header = format!("t={t},v1={}", sign("whsec_test", t, "{}"));
        assert!(verify_signature(&header, b"{}", "whsec_test", now).is_ok());
    }

    #[test]
    fn headers_without_timestamp_or_signature_are_refused() {
        for header in ["", "t=12", "v1=abcd", "t=abc,v1=00"] {
            assert!(matches!(
                verify_signature(header, b"{}", "whsec_test", Utc::now()),
                Err(WebhookError::MissingSignature)
            ));
        }
    }
}
