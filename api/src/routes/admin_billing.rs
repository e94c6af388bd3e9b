//! Platform admin billing: subscriptions by tier and status, monthly recurring
//! revenue, per-tenant overrides, grace periods, legacy migration, and Stripe
//! events for customers no tenant owns.

use super::billing::{SubscriptionView, view};
use super::{Page, limit, page};
use crate::auth::{Principal, RequestInfo, anonymous_metadata};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath, ApiQuery, double_option};
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use coverwatch_domain::ids::TenantId;
use coverwatch_domain::plans::{BillingCycle, Limit, Price, Tier};
use coverwatch_domain::subscription::{OverridesPatch, SubscriptionCommand, SubscriptionStatus};
use coverwatch_projections::billing::queries;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionQuery {
    /// FREE, INDIVIDUAL, PRO, ENTERPRISE or SUBSCRIBER (the recorded tier).
    pub tier: Option<String>,
    /// trialing, active, past_due, cancelled or paused.
    pub status: Option<String>,
    pub cursor: Option<String>,
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TenantSubscription {
    pub tenant_id: Uuid,
    #[serde(flatten)]
    pub subscription: SubscriptionView,
}

/// Every tenant's subscription, filtered by tier and status.
#[utoipa::path(get, path = "/v1/admin/subscriptions", tag = "admin", params(SubscriptionQuery),
    security(("admin_token" = [])), responses((status = 200, body = Page<TenantSubscription>)))]
pub async fn list_subscriptions(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(query): ApiQuery<SubscriptionQuery>,
) -> ApiResult<Json<Page<TenantSubscription>>> {
    principal.require_admin()?;
    let tier = match query.tier.as_deref() {
        None => None,
        Some(text) => Some(Tier::parse(text).ok_or_else(|| ApiError::validation("tier", "is not a tier"))?),
    };
    let status = match query.status.as_deref() {
        None => None,
        Some(text) => {
            Some(SubscriptionStatus::parse(text).ok_or_else(|| ApiError::validation("status", "is not a status"))?)
        }
    };
    let limit = limit(query.limit)?;
    let cursor: Option<TenantId> = super::uuid_cursor(query.cursor.as_deref())?;
    let rows = queries::subscriptions_page(
        &state.pool,
        tier.map(Tier::as_str),
        status.map(SubscriptionStatus::as_str),
        cursor,
        limit + 1,
    )
    .await?;
    let (rows, next_cursor) = page(rows, limit, |(id, _)| id.to_string());
    let items = rows
        .into_iter()
        .map(|(tenant_id, subscription)| TenantSubscription {
            tenant_id: tenant_id.into(),
            subscription: view(&subscription, &state),
        })
        .collect();
    Ok(Json(Page { items, next_cursor }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TierRevenue {
    pub subscriptions: u64,
    pub mrr_cents: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MrrView {
    pub currency: String,
    pub mrr_cents: u64,
    pub by_tier: BTreeMap<String, TierRevenue>,
    pub as_of: DateTime<Utc>,
}

/// Monthly recurring revenue by tier, from the subscriptions read model:
/// paying subscriptions (active or past_due) at what Stripe charges them
/// (the catalog price when Stripe did not say), annual prices divided by 12.
#[utoipa::path(get, path = "/v1/admin/mrr", tag = "admin", security(("admin_token" = [])),
    responses((status = 200, body = MrrView)))]
pub async fn mrr(State(state): State<AppState>, principal: Principal) -> ApiResult<Json<MrrView>> {
    principal.require_admin()?;
    let rows = queries::paying(&state.pool).await?;
    let now = state.clock.now();
    let mut by_tier: BTreeMap<String, TierRevenue> = BTreeMap::new();
    for subscription in rows {
        // A cancellation whose period already ended no longer pays.
        if subscription.effective_tier(now, &state.catalog) == Tier::Free {
            continue;
        }
        let cycle = subscription.cycle.unwrap_or(BillingCycle::Monthly);
        let plan = state.catalog.plan(subscription.tier);
        let list_price = match cycle {
            BillingCycle::Monthly => plan.monthly_price_cents,
            BillingCycle::Annual => plan.annual_price_cents,
        };
        let per_cycle = subscription.amount_cents.or(match list_price {
            Price::Cents(cents) => Some(cents),
            Price::Custom => None,
        });
        let monthly = match cycle {
            BillingCycle::Monthly => per_cycle.unwrap_or(0),
            BillingCycle::Annual => per_cycle.unwrap_or(0) / 12,
        };
        let entry = by_tier.entry(subscription.tier.to_string()).or_insert(TierRevenue {
            subscriptions: 0,
            mrr_cents: 0,
        });
        entry.subscriptions += 1;
        entry.mrr_cents += monthly;
    }
    Ok(Json(MrrView {
        currency: state.catalog.currency.clone(),
        mrr_cents: by_tier.values().map(|t| t.mrr_cents).sum(),
        by_tier,
        as_of: now,
    }))
}

/// Any subset of overrides; `null` removes one, an absent field keeps it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OverridesBody {
    /// A number or "unlimited".
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<Object>)]
    pub max_accounts: Option<Option<Limit>>,
    /// A number or "unlimited".
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<Object>)]
    pub max_members: Option<Option<Limit>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<u32>)]
    pub history_retention_days: Option<Option<u32>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<bool>)]
    pub org_features: Option<Option<bool>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<u32>)]
    pub api_rate_per_minute: Option<Option<u32>>,
    /// Scheduled scans and re-discoveries every this many hours (0: on
    /// demand only).
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<u32>)]
    pub scan_interval_hours: Option<Option<u32>>,
}

async fn admin_subscription_command(
    state: &AppState,
    info: &RequestInfo,
    tenant_id: TenantId,
    command: SubscriptionCommand,
) -> ApiResult<Json<SubscriptionView>> {
    let metadata = anonymous_metadata(tenant_id, "platform-admin", info);
    let committed = state.billing.admin_change(tenant_id, command, &metadata).await?;
    state.settle(committed).await;
    Ok(Json(view(&state.billing.load(tenant_id).await?, state)))
}

/// Set or remove per-tenant overrides of the plan's limits and features.
#[utoipa::path(put, path = "/v1/admin/tenants/{tenant_id}/overrides", tag = "admin",
    params(("tenant_id" = Uuid, Path)), request_body = OverridesBody, security(("admin_token" = [])),
    responses((status = 200, body = SubscriptionView)))]
pub async fn put_overrides(
    State(state): State<AppState>,
    principal: Principal,
    info: RequestInfo,
    ApiPath(tenant_id): ApiPath<TenantId>,
    ApiJson(body): ApiJson<OverridesBody>,
) -> ApiResult<Json<SubscriptionView>> {
    principal.require_admin()?;
    let patch = OverridesPatch {
        max_accounts: body.max_accounts,
        max_members: body.max_members,
        history_retention_days: body.history_retention_days,
        org_features: body.org_features,
        api_rate_per_minute: body.api_rate_per_minute,
        scan_interval_hours: body.scan_interval_hours,
    };
    admin_subscription_command(&state, &info, tenant_id, SubscriptionCommand::SetOverrides { patch }).await
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GraceBody {
    pub until: DateTime<Utc>,
    pub reason: String,
}

/// Grant a grace period: the tenant keeps its tier while past due or after
/// cancellation until `until`.
#[utoipa::path(post, path = "/v1/admin/tenants/{tenant_id}/subscription/grace-period", tag = "admin",
    params(("tenant_id" = Uuid, Path)), request_body = GraceBody, security(("admin_token" = [])),
    responses((status = 200, body = SubscriptionView)))]
pub async fn grant_grace(
    State(state): State<AppState>,
    principal: Principal,
    info: RequestInfo,
    ApiPath(tenant_id): ApiPath<TenantId>,
    ApiJson(body): ApiJson<GraceBody>,
) -> ApiResult<Json<SubscriptionView>> {
    principal.require_admin()?;
    let command = SubscriptionCommand::GrantGracePeriod {
        until: body.until,
        reason: body.reason,
    };
    admin_subscription_command(&state, &info, tenant_id, command).await
}

/// Record that a tenant came from the retired SUBSCRIBER tier: it keeps
/// those limits for the legacy grace period, then falls to the tier it
/// chose or to FREE.
#[utoipa::path(post, path = "/v1/admin/tenants/{tenant_id}/subscription/legacy-migration", tag = "admin",
    params(("tenant_id" = Uuid, Path)), security(("admin_token" = [])),
    responses((status = 200, body = SubscriptionView)))]
pub async fn legacy_migration(
    State(state): State<AppState>,
    principal: Principal,
    info: RequestInfo,
    ApiPath(tenant_id): ApiPath<TenantId>,
) -> ApiResult<Json<SubscriptionView>> {
    principal.require_admin()?;
    admin_subscription_command(&state, &info, tenant_id, SubscriptionCommand::MigrateFromLegacy).await
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UnmatchedEvent {
    pub event_id: String,
    pub event_type: String,
    pub customer_id: String,
    pub event_created: Option<DateTime<Utc>>,
    pub received_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct UnmatchedQuery {
    pub cursor: Option<String>,
    pub limit: Option<i64>,
}

/// Verified Stripe events for customers no tenant owns: acknowledged to
/// Stripe, kept here, never applied.
#[utoipa::path(get, path = "/v1/admin/stripe/unmatched-events", tag = "admin", params(UnmatchedQuery),
    security(("admin_token" = [])), responses((status = 200, body = Page<UnmatchedEvent>)))]
pub async fn unmatched_events(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(query): ApiQuery<UnmatchedQuery>,
) -> ApiResult<Json<Page<UnmatchedEvent>>> {
    principal.require_admin()?;
    let limit = limit(query.limit)?;
    // The cursor is the last Stripe event id of the previous page.
    if let Some(cursor) = query.cursor.as_deref()
        && !(cursor.starts_with("evt_")
            && cursor.len() <= 255
            && cursor.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
    {
        return Err(ApiError::validation("cursor", "is not a cursor this API returned"));
    }
    let rows = state
        .billing
        .unmatched_events(query.cursor.as_deref(), limit + 1)
        .await?;
    let (rows, next_cursor) = page(rows, limit, |e| e.event_id.clone());
    let items = rows
        .into_iter()
        .map(|e| UnmatchedEvent {
            event_id: e.event_id,
            event_type: e.event_type,
            customer_id: e.customer_id,
            event_created: e.event_created,
            received_at: e.received_at,
        })
        .collect();
    Ok(Json(Page { items, next_cursor }))
}
