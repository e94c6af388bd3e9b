//! Plans, a tenant's subscription (read by any member, managed by the owner),
//! checkout and portal sessions, invoices, usage, and Stripe's webhook.

use super::{Page, limit, page};
use crate::auth::{Member, Principal, RequestInfo};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::state::AppState;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use coverwatch_commands::services::billing::WebhookOutcome;
use coverwatch_domain::ids::TenantId;
use coverwatch_domain::plans::{BillingCycle, Price, Tier};
use coverwatch_domain::subscription::{Subscription, SubscriptionCommand, Usage};
use coverwatch_domain::values::Role;
use coverwatch_projections::billing::usage::{self, MetricUsage as MetricRow, UsageReport as ReportRow};
use coverwatch_projections::billing::{InvoiceRow, queries};
use coverwatch_projections::directory::queries as directory;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::{IntoParams, ToSchema};

#[derive(Debug, Serialize, ToSchema)]
pub struct EntitlementsView {
    /// `null` when unlimited.
    pub max_accounts: Option<u64>,
    /// `null` when unlimited.
    pub max_members: Option<u64>,
    pub org_features: bool,
    pub history_retention_days: u32,
    pub api_rate_per_minute: u32,
    /// Scheduled scans and re-discoveries every this many hours; 0: on
    /// demand only.
    pub scan_interval_hours: u32,
}

impl From<coverwatch_domain::plans::Entitlements> for EntitlementsView {
    fn from(e: coverwatch_domain::plans::Entitlements) -> Self {
        Self {
            max_accounts: e.max_accounts.value(),
            max_members: e.max_members.value(),
            org_features: e.org_features,
            history_retention_days: e.history_retention_days,
            api_rate_per_minute: e.api_rate_per_minute,
            scan_interval_hours: e.scan_interval_hours,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PlanView {
    pub tier: String,
    pub name: String,
    /// Cents per month; `null` for custom (contract) pricing.
    pub monthly_price_cents: Option<u64>,
    /// Cents per year; `null` for custom pricing.
    pub annual_price_cents: Option<u64>,
    pub currency: String,
    pub purchasable: bool,
    pub entitlements: EntitlementsView,
    pub stripe_price_monthly: Option<String>,
    pub stripe_price_annual: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PlansView {
    pub catalog_version: u32,
    pub plans: Vec<PlanView>,
}

fn cents(price: Price) -> Option<u64> {
    match price {
        Price::Cents(cents) => Some(cents),
        Price::Custom => None,
    }
}

/// The plan catalog (public): tiers, prices and entitlements. Retired tiers
/// are not listed.
#[utoipa::path(get, path = "/v1/plans", tag = "billing", responses((status = 200, body = PlansView)))]
pub async fn list_plans(State(state): State<AppState>) -> Json<PlansView> {
    let catalog = &state.catalog;
    let plans = catalog
        .tiers
        .iter()
        .filter(|plan| !plan.retired)
        .map(|plan| PlanView {
            tier: plan.id.to_string(),
            name: plan.name.clone(),
            monthly_price_cents: cents(plan.monthly_price_cents),
            annual_price_cents: cents(plan.annual_price_cents),
            currency: catalog.currency.clone(),
            purchasable: plan.purchasable(),
            entitlements: plan.entitlements().into(),
            stripe_price_monthly: plan.stripe_price_monthly.clone(),
            stripe_price_annual: plan.stripe_price_annual.clone(),
        })
        .collect();
    Json(PlansView {
        catalog_version: catalog.version,
        plans,
    })
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ScheduledChangeView {
    pub to_tier: String,
    pub effective_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SubscriptionView {
    /// The tier whose entitlements hold now (after any due period end).
    pub tier: String,
    /// The tier recorded on the subscription (what is paid for).
    pub subscribed_tier: String,
    pub status: String,
    pub cycle: Option<String>,
    pub current_period_start: Option<DateTime<Utc>>,
    pub current_period_end: Option<DateTime<Utc>>,
    pub cancel_at_period_end: bool,
    pub trial_end: Option<DateTime<Utc>>,
    pub scheduled_change: Option<ScheduledChangeView>,
    /// Until when a tenant migrated from the retired SUBSCRIBER tier keeps it.
    pub legacy_grace_until: Option<DateTime<Utc>>,
    /// An admin-granted grace period.
    pub grace_until: Option<DateTime<Utc>>,
    pub has_billing_account: bool,
    pub entitlements: EntitlementsView,
    /// Per-tenant overrides set by the platform admin (they win over the tier).
    #[schema(value_type = Object)]
    pub overrides: serde_json::Value,
    pub version: u64,
}

fn cycle_name(cycle: BillingCycle) -> String {
    match cycle {
        BillingCycle::Monthly => "monthly".into(),
        BillingCycle::Annual => "annual".into(),
    }
}

pub fn view(subscription: &Subscription, state: &AppState) -> SubscriptionView {
    let now = state.clock.now();
    SubscriptionView {
        tier: subscription.effective_tier(now, &state.catalog).to_string(),
        subscribed_tier: subscription.tier.to_string(),
        status: subscription.status.as_str().into(),
        cycle: subscription.cycle.map(cycle_name),
        current_period_start: subscription.current_period_start,
        current_period_end: subscription.current_period_end,
        cancel_at_period_end: subscription.cancel_at_period_end,
        trial_end: subscription.trial_end,
        scheduled_change: subscription.scheduled_change.map(|change| ScheduledChangeView {
            to_tier: change.to_tier.to_string(),
            effective_at: change.effective_at,
        }),
        legacy_grace_until: subscription.legacy.as_ref().map(|legacy| legacy.grace_until),
        grace_until: subscription.grace_until,
        has_billing_account: subscription.stripe_customer_id.is_some(),
        entitlements: subscription.entitlements(now, &state.catalog).into(),
        overrides: serde_json::to_value(subscription.overrides).unwrap_or_default(),
        version: subscription.version,
    }
}

/// The tenant's subscription: tier, status, period and entitlements (any member).
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/subscription", tag = "billing",
    params(("tenant_id" = Uuid, Path)), security(("api_key" = [])),
    responses((status = 200, body = SubscriptionView), (status = 404, body = crate::error::Problem)))]
pub async fn get_subscription(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    ApiPath(tenant_id): ApiPath<TenantId>,
) -> ApiResult<Json<SubscriptionView>> {
    principal.in_tenant(tenant_id, &state, &headers).await?;
    let subscription = queries::subscription(&state.pool, tenant_id).await?;
    Ok(Json(view(&subscription, &state)))
}

fn owner_only(member: &Member) -> ApiResult<()> {
    member.require(|role| role == Role::Owner, "only the owner manages billing")
}

fn parse_tier(input: &str) -> ApiResult<Tier> {
    Tier::parse(input).ok_or_else(|| ApiError::validation("tier", "must be one of FREE, INDIVIDUAL, PRO, ENTERPRISE"))
}

fn parse_cycle(input: Option<&str>) -> ApiResult<BillingCycle> {
    match input.unwrap_or("monthly") {
        "monthly" => Ok(BillingCycle::Monthly),
        "annual" => Ok(BillingCycle::Annual),
        _ => Err(ApiError::validation("cycle", "must be monthly or annual")),
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanChoice {
    /// INDIVIDUAL, PRO or ENTERPRISE (FREE for change-plan).
    pub tier: String,
    /// monthly (default) or annual.
    pub cycle: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CheckoutView {
    pub checkout_url: String,
    pub session_id: String,
}

/// Start a Stripe Checkout for a tier and cycle (owner). The subscription
/// changes when Stripe reports the completed checkout by webhook.
#[utoipa::path(post, path = "/v1/tenants/{tenant_id}/subscription/checkout", tag = "billing",
    params(("tenant_id" = Uuid, Path)), request_body = PlanChoice, security(("api_key" = [])),
    responses((status = 201, body = CheckoutView), (status = 503, body = crate::error::Problem)))]
pub async fn checkout(
    State(state): State<AppState>,
    principal: Principal,
    info: RequestInfo,
    headers: HeaderMap,
    ApiPath(tenant_id): ApiPath<TenantId>,
    ApiJson(body): ApiJson<PlanChoice>,
) -> ApiResult<impl IntoResponse> {
    let member = principal.in_tenant(tenant_id, &state, &headers).await?;
    owner_only(&member)?;
    let tier = parse_tier(&body.tier)?;
    let cycle = parse_cycle(body.cycle.as_deref())?;
    let tenant = directory::tenant(&state.pool, tenant_id)
        .await?
        .ok_or_else(|| ApiError::NotFound("tenant".into()))?;
    let billing_email = tenant.billing_email.or(tenant.contact_email);
    if let Some(created) = state.billing.ensure_subscription(tenant_id).await? {
        state.settle(created).await;
    }
    let base = state.settings.http.public_url.trim_end_matches('/');
    let (session, committed) = state
        .billing
        .checkout(
            tenant_id,
            &tenant.name,
            billing_email.as_deref(),
            tier,
            cycle,
            &format!("{base}/billing/success?session_id={{CHECKOUT_SESSION_ID}}"),
            &format!("{base}/billing/cancelled"),
            &member.metadata(&info),
        )
        .await?;
    state.settle(committed).await;
    Ok((
        StatusCode::CREATED,
        Json(CheckoutView {
            checkout_url: session.url,
            session_id: session.id,
        }),
    ))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PortalView {
    pub url: String,
}

/// A Stripe billing portal session for the tenant's customer (owner).
#[utoipa::path(post, path = "/v1/tenants/{tenant_id}/subscription/portal", tag = "billing",
    params(("tenant_id" = Uuid, Path)), security(("api_key" = [])),
    responses((status = 201, body = PortalView), (status = 503, body = crate::error::Problem)))]
pub async fn portal(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    ApiPath(tenant_id): ApiPath<TenantId>,
) -> ApiResult<impl IntoResponse> {
    let member = principal.in_tenant(tenant_id, &state, &headers).await?;
    owner_only(&member)?;
    let base = state.settings.http.public_url.trim_end_matches('/');
    let url = state.billing.portal(tenant_id, &format!("{base}/billing")).await?;
    Ok((StatusCode::CREATED, Json(PortalView { url })))
}

async fn owner_command(
    state: &AppState,
    principal: &Principal,
    info: &RequestInfo,
    headers: &HeaderMap,
    tenant_id: TenantId,
    command: impl FnOnce(Usage) -> SubscriptionCommand,
) -> ApiResult<Json<SubscriptionView>> {
    let member = principal.in_tenant(tenant_id, state, headers).await?;
    owner_only(&member)?;
    let committed = state
        .billing
        .owner_change(tenant_id, command, &member.metadata(info))
        .await?;
    state.settle(committed).await;
    let subscription = state.billing.load(tenant_id).await?;
    Ok(Json(view(&subscription, state)))
}

/// Change plan (owner): an upgrade applies now (prorated by Stripe), a
/// downgrade at period end; refused while usage exceeds the target's limits.
#[utoipa::path(post, path = "/v1/tenants/{tenant_id}/subscription/change-plan", tag = "billing",
    params(("tenant_id" = Uuid, Path)), request_body = PlanChoice, security(("api_key" = [])),
    responses((status = 200, body = SubscriptionView), (status = 422, body = crate::error::Problem)))]
pub async fn change_plan(
    State(state): State<AppState>,
    principal: Principal,
    info: RequestInfo,
    headers: HeaderMap,
    ApiPath(tenant_id): ApiPath<TenantId>,
    ApiJson(body): ApiJson<PlanChoice>,
) -> ApiResult<Json<SubscriptionView>> {
    let tier = parse_tier(&body.tier)?;
    let cycle = parse_cycle(body.cycle.as_deref())?;
    owner_command(&state, &principal, &info, &headers, tenant_id, |usage| {
        SubscriptionCommand::ChangePlan { tier, cycle, usage }
    })
    .await
}

/// Cancel at the end of the paid period (owner); the tenant then falls to FREE.
#[utoipa::path(post, path = "/v1/tenants/{tenant_id}/subscription/cancel", tag = "billing",
    params(("tenant_id" = Uuid, Path)), security(("api_key" = [])),
    responses((status = 200, body = SubscriptionView), (status = 409, body = crate::error::Problem)))]
pub async fn cancel(
    State(state): State<AppState>,
    principal: Principal,
    info: RequestInfo,
    headers: HeaderMap,
    ApiPath(tenant_id): ApiPath<TenantId>,
) -> ApiResult<Json<SubscriptionView>> {
    owner_command(&state, &principal, &info, &headers, tenant_id, |_| {
        SubscriptionCommand::CancelAtPeriodEnd
    })
    .await
}

/// Withdraw a cancellation before the period ends (owner).
#[utoipa::path(post, path = "/v1/tenants/{tenant_id}/subscription/reactivate", tag = "billing",
    params(("tenant_id" = Uuid, Path)), security(("api_key" = [])),
    responses((status = 200, body = SubscriptionView), (status = 409, body = crate::error::Problem)))]
pub async fn reactivate(
    State(state): State<AppState>,
    principal: Principal,
    info: RequestInfo,
    headers: HeaderMap,
    ApiPath(tenant_id): ApiPath<TenantId>,
) -> ApiResult<Json<SubscriptionView>> {
    owner_command(&state, &principal, &info, &headers, tenant_id, |_| {
        SubscriptionCommand::Reactivate
    })
    .await
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InvoiceView {
    pub invoice_id: String,
    pub number: Option<String>,
    pub subscription_id: Option<String>,
    pub status: String,
    pub currency: String,
    pub amount_due_cents: i64,
    pub amount_paid_cents: i64,
    pub hosted_invoice_url: Option<String>,
    pub invoice_pdf: Option<String>,
    pub period_start: Option<DateTime<Utc>>,
    pub period_end: Option<DateTime<Utc>>,
    pub recorded_at: DateTime<Utc>,
}

impl From<InvoiceRow> for InvoiceView {
    fn from(row: InvoiceRow) -> Self {
        Self {
            invoice_id: row.invoice_id,
            number: row.number,
            subscription_id: row.subscription_id,
            status: row.status,
            currency: row.currency,
            amount_due_cents: row.amount_due_cents,
            amount_paid_cents: row.amount_paid_cents,
            hosted_invoice_url: row.hosted_invoice_url,
            invoice_pdf: row.invoice_pdf,
            period_start: row.period_start,
            period_end: row.period_end,
            recorded_at: row.recorded_at,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct InvoiceQuery {
    /// Opaque cursor from `next_cursor`.
    pub cursor: Option<String>,
    pub limit: Option<i64>,
}

/// The tenant's invoices as Stripe reported them, newest first (owner or admin).
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/invoices", tag = "billing",
    params(("tenant_id" = Uuid, Path), InvoiceQuery), security(("api_key" = [])),
    responses((status = 200, body = Page<InvoiceView>)))]
pub async fn list_invoices(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    ApiPath(tenant_id): ApiPath<TenantId>,
    ApiQuery(query): ApiQuery<InvoiceQuery>,
) -> ApiResult<Json<Page<InvoiceView>>> {
    let member = principal.in_tenant(tenant_id, &state, &headers).await?;
    member.require(Role::can_administer, "only an owner or admin sees invoices")?;
    let limit = limit(query.limit)?;
    let cursor: Option<i64> = match query.cursor.as_deref() {
        None => None,
        Some(text) => Some(
            text.parse()
                .map_err(|_| ApiError::validation("cursor", "is not a cursor this API returned"))?,
        ),
    };
    let rows = queries::invoices_page(&state.pool, tenant_id, cursor, limit + 1).await?;
    let (rows, next_cursor) = page(rows, limit, |invoice| invoice.position.to_string());
    Ok(Json(Page {
        items: rows.into_iter().map(InvoiceView::from).collect(),
        next_cursor,
    }))
}

/// Usage against the plan in the current billing period (any member).
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/usage", tag = "billing",
    params(("tenant_id" = Uuid, Path)), security(("api_key" = [])),
    responses((status = 200, body = UsageReport)))]
pub async fn usage(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    ApiPath(tenant_id): ApiPath<TenantId>,
) -> ApiResult<Json<UsageReport>> {
    principal.in_tenant(tenant_id, &state, &headers).await?;
    let report = usage::report(&state.pool, &state.catalog, tenant_id, state.clock.now()).await?;
    let mut report: UsageReport = report.into();
    // Account scans are metered (not limited): one per account scanned.
    let scans = state
        .scans
        .scans_between(tenant_id, report.period_start, report.period_end)
        .await?;
    report.metrics.insert(
        "account_scans".into(),
        MetricUsage {
            used: u64::try_from(scans).unwrap_or(0),
            limit: None,
            percent: None,
            thresholds_crossed: vec![],
        },
    );
    Ok(Json(report))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MetricUsage {
    pub used: u64,
    /// `null` when unlimited.
    pub limit: Option<u64>,
    /// `null` when unlimited.
    pub percent: Option<f64>,
    /// Thresholds (80, 100) crossed in this period, as recorded in the log.
    pub thresholds_crossed: Vec<u8>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UsageReport {
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    pub tier: String,
    pub metrics: BTreeMap<String, MetricUsage>,
}

impl From<ReportRow> for UsageReport {
    fn from(report: ReportRow) -> Self {
        let metric = |m: MetricRow| MetricUsage {
            used: m.used,
            limit: m.limit,
            percent: m.percent,
            thresholds_crossed: m.thresholds_crossed,
        };
        Self {
            period_start: report.period_start,
            period_end: report.period_end,
            tier: report.tier,
            metrics: report.metrics.into_iter().map(|(name, m)| (name, metric(m))).collect(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookReceipt {
    /// applied, duplicate, unmatched or ignored.
    pub outcome: String,
}

/// Stripe's webhook endpoint. The `Stripe-Signature` header is verified
/// (HMAC-SHA256, 5-minute tolerance) before the body is parsed; bad
/// signatures, stale timestamps and malformed bodies get 400 and change nothing.
#[utoipa::path(post, path = "/v1/webhooks/stripe", tag = "billing",
    responses((status = 200, body = WebhookReceipt), (status = 400, body = crate::error::Problem)))]
pub async fn stripe_webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<WebhookReceipt>> {
    let signature = headers.get("stripe-signature").and_then(|v| v.to_str().ok());
    let outcome = state.billing.webhook(signature, &body).await?;
    let outcome = match outcome {
        WebhookOutcome::Applied { committed, .. } => {
            state.settle(committed).await;
            "applied"
        }
        WebhookOutcome::AlreadyApplied => "duplicate",
        WebhookOutcome::Unmatched => "unmatched",
        WebhookOutcome::Ignored => "ignored",
    };
    Ok(Json(WebhookReceipt {
        outcome: outcome.into(),
    }))
}
