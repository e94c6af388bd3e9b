//! Cloud accounts: standalone AWS accounts connected by the tenant, and the
//! disconnect that organization members share. The plan's account limit is
//! decided by the tenant's CloudAccounts aggregate, with the entitlements
//! handed in from the subscription.

use super::{Fields, Page, limit, page};
use crate::auth::{Principal, RequestInfo};
use crate::error::ApiResult;
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use coverwatch_domain::cloud::values::{AwsAccountId, Environment, Region, RoleArn};
use coverwatch_domain::cloud::{AccountSource, NewAccount};
use coverwatch_domain::ids::TenantId;
use coverwatch_domain::values::Role;
use coverwatch_projections::cloud::queries::{self, CloudAccountRow};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectAccount {
    /// 12 digits.
    pub account_id: String,
    pub alias: Option<String>,
    pub region: String,
    /// `arn:aws:iam::<account>:role/<name>`: the read-only audit role.
    pub role_arn: String,
    /// production, staging or development.
    pub environment: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CloudAccountView {
    pub account_id: String,
    pub alias: Option<String>,
    pub region: String,
    pub role_arn: String,
    pub environment: String,
    /// connected, disconnected, or error (its role could not be assumed).
    pub status: String,
    /// Why it is in error: AWS's answer to AssumeRole.
    pub error: Option<String>,
    /// standalone or organization.
    pub source: String,
    pub organization_id: Option<Uuid>,
    /// Where scans look (null: every enabled region, or the organization's).
    pub scan_regions: Option<Vec<String>>,
    pub connected_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<CloudAccountRow> for CloudAccountView {
    fn from(row: CloudAccountRow) -> Self {
        Self {
            account_id: row.account_id,
            alias: row.alias,
            region: row.region,
            role_arn: row.role_arn,
            environment: row.environment,
            status: row.status,
            error: row.error,
            source: row.source,
            organization_id: row.organization_id.map(Into::into),
            scan_regions: row.scan_regions,
            connected_at: row.connected_at,
            updated_at: row.updated_at,
        }
    }
}

/// Where an account of the tenant is read.
pub(super) fn account_location(tenant_id: TenantId, account_id: &str) -> String {
    format!("/v1/tenants/{tenant_id}/cloud-accounts/{account_id}")
}

/// One cloud account of the tenant (members).
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/cloud-accounts/{account_id}", tag = "cloud",
    params(("tenant_id" = Uuid, Path), ("account_id" = String, Path)), security(("api_key" = [])),
    responses((status = 200, body = CloudAccountView), (status = 404, body = crate::error::Problem)))]
pub async fn get_account(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    ApiPath((tenant_id, account_id)): ApiPath<(TenantId, String)>,
) -> ApiResult<Json<CloudAccountView>> {
    principal.in_tenant(tenant_id, &state, &headers).await?;
    let account_id = AwsAccountId::parse(&account_id)?;
    account_view(&state, tenant_id, account_id.as_str()).await
}

/// The account as the read model shows it after a command that wrote it.
pub(super) async fn account_view(
    state: &AppState,
    tenant_id: TenantId,
    account_id: &str,
) -> ApiResult<Json<CloudAccountView>> {
    let row = queries::account(&state.pool, tenant_id, account_id)
        .await?
        .ok_or_else(|| crate::error::ApiError::NotFound("cloud account".into()))?;
    Ok(Json(row.into()))
}

/// Connect a standalone AWS account (owner or admin): its role is assumed
/// through STS with the tenant's external id first; if it cannot be, the
/// account is recorded with status `error` and AWS's reason (and counts for
/// nothing). Counts against the plan's cloud account limit (402 beyond it).
#[utoipa::path(post, path = "/v1/tenants/{tenant_id}/cloud-accounts", tag = "cloud",
    params(("tenant_id" = Uuid, Path)), request_body = ConnectAccount, security(("api_key" = [])),
    responses((status = 201, body = CloudAccountView), (status = 402, body = crate::error::Problem)))]
pub async fn connect_account(
    State(state): State<AppState>,
    principal: Principal,
    info: RequestInfo,
    headers: HeaderMap,
    ApiPath(tenant_id): ApiPath<TenantId>,
    ApiJson(body): ApiJson<ConnectAccount>,
) -> ApiResult<impl IntoResponse> {
    let member = principal.in_tenant(tenant_id, &state, &headers).await?;
    member.require(Role::can_administer, "only an owner or admin connects accounts")?;
    let mut fields = Fields::default();
    let account_id = fields.check("account_id", AwsAccountId::parse(body.account_id.trim()));
    let region = fields.check("region", Region::parse(body.region.trim()));
    let role_arn = fields.check("role_arn", RoleArn::parse(body.role_arn.trim()));
    let environment = fields.check("environment", Environment::parse(body.environment.trim()));
    let alias = body.alias.map(|a| a.trim().to_owned()).filter(|a| !a.is_empty());
    if alias.as_ref().is_some_and(|a| a.chars().count() > 100) {
        fields.check::<(), _>("alias", Err("must be at most 100 characters"));
    }
    fields.finish()?;
    let account_id = account_id.unwrap();
    let account = NewAccount {
        account_id: account_id.clone(),
        alias,
        region: region.unwrap(),
        role_arn: role_arn.unwrap(),
        environment: environment.unwrap(),
        source: AccountSource::Standalone,
    };
    let connection = state
        .cloud_accounts
        .connect(tenant_id, account, &member.metadata(&info))
        .await?;
    state
        .settle_or_accepted(connection.committed, account_location(tenant_id, account_id.as_str()))
        .await?;
    let view = account_view(&state, tenant_id, account_id.as_str()).await?;
    // Recorded either way: connected, or in error with AWS's reason.
    Ok((StatusCode::CREATED, view))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AccountQuery {
    /// production, staging or development.
    pub environment: Option<String>,
    /// connected, disconnected or error.
    pub status: Option<String>,
    pub cursor: Option<String>,
    pub limit: Option<i64>,
}

/// The tenant's cloud accounts, filtered by environment and status (members).
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/cloud-accounts", tag = "cloud",
    params(("tenant_id" = Uuid, Path), AccountQuery), security(("api_key" = [])),
    responses((status = 200, body = Page<CloudAccountView>)))]
pub async fn list_accounts(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    ApiPath(tenant_id): ApiPath<TenantId>,
    ApiQuery(query): ApiQuery<AccountQuery>,
) -> ApiResult<Json<Page<CloudAccountView>>> {
    principal.in_tenant(tenant_id, &state, &headers).await?;
    let mut fields = Fields::default();
    let environment = query
        .environment
        .as_deref()
        .and_then(|e| fields.check("environment", Environment::parse(e)));
    if let Some(status) = query.status.as_deref()
        && !["connected", "disconnected", "error"].contains(&status)
    {
        fields.check::<(), _>("status", Err("must be connected, disconnected or error"));
    }
    // The cursor is the last account id of the previous page.
    let cursor = fields.check_opt("cursor", query.cursor.as_deref(), |c| {
        AwsAccountId::parse(c).map_err(|_| "is not a cursor this API returned")
    });
    fields.finish()?;
    let limit = limit(query.limit)?;
    let rows = queries::accounts_page(
        &state.pool,
        tenant_id,
        environment.map(Environment::as_str),
        query.status.as_deref(),
        cursor.as_ref().map(AwsAccountId::as_str),
        limit + 1,
    )
    .await?;
    let (rows, next_cursor) = page(rows, limit, |a| a.account_id.clone());
    Ok(Json(Page {
        items: rows.into_iter().map(CloudAccountView::from).collect(),
        next_cursor,
    }))
}

/// Disconnect an account (owner or admin): it stays listed, no longer counts.
#[utoipa::path(post, path = "/v1/tenants/{tenant_id}/cloud-accounts/{account_id}/disconnect", tag = "cloud",
    params(("tenant_id" = Uuid, Path), ("account_id" = String, Path)), security(("api_key" = [])),
    responses((status = 200, body = CloudAccountView), (status = 404, body = crate::error::Problem)))]
pub async fn disconnect_account(
    State(state): State<AppState>,
    principal: Principal,
    info: RequestInfo,
    headers: HeaderMap,
    ApiPath((tenant_id, account_id)): ApiPath<(TenantId, String)>,
) -> ApiResult<Json<CloudAccountView>> {
    let member = principal.in_tenant(tenant_id, &state, &headers).await?;
    member.require(Role::can_administer, "only an owner or admin disconnects accounts")?;
    disconnect(&state, &member, &info, tenant_id, &account_id).await
}

/// Disconnects an account in the tenant's CloudAccounts aggregate; an
/// organization member is also deselected in its organization.
pub(super) async fn disconnect(
    state: &AppState,
    member: &crate::auth::Member,
    info: &RequestInfo,
    tenant_id: TenantId,
    account_id: &str,
) -> ApiResult<Json<CloudAccountView>> {
    let account_id = AwsAccountId::parse(account_id)?;
    let committed = state
        .cloud_accounts
        .disconnect(tenant_id, account_id.clone(), &member.metadata(info))
        .await?;
    state
        .settle_or_accepted(committed, account_location(tenant_id, account_id.as_str()))
        .await?;
    account_view(state, tenant_id, account_id.as_str()).await
}
