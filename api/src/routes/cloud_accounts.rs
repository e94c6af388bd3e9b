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
use coverwatch_commands::billing::RETRIES;
use coverwatch_domain::cloud::values::{AwsAccountId, Environment, Region, RoleArn};
use coverwatch_domain::cloud::{AccountSource, CloudAccountsCommand, CloudOrganizationCommand, NewAccount};
use coverwatch_domain::values::Role;
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

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct CloudAccountView {
    pub account_id: String,
    pub alias: Option<String>,
    pub region: String,
    pub role_arn: String,
    pub environment: String,
    /// connected or disconnected.
    pub status: String,
    /// standalone or organization.
    pub source: String,
    pub organization_id: Option<Uuid>,
    pub connected_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const ACCOUNT_COLUMNS: &str =
    "account_id, alias, region, role_arn, environment, status, source, organization_id, connected_at, updated_at";

pub(super) async fn account_view(
    state: &AppState,
    tenant_id: Uuid,
    account_id: &str,
) -> ApiResult<Json<CloudAccountView>> {
    let view: CloudAccountView = sqlx::query_as(&format!(
        "SELECT {ACCOUNT_COLUMNS} FROM cloud_accounts WHERE tenant_id = $1 AND account_id = $2"
    ))
    .bind(tenant_id)
    .bind(account_id)
    .fetch_one(&state.pool)
    .await?;
    Ok(Json(view))
}

/// Connect a standalone AWS account (owner or admin). Counts against the
/// plan's cloud account limit (402 beyond it).
#[utoipa::path(post, path = "/v1/tenants/{tenant_id}/cloud-accounts", tag = "cloud",
    params(("tenant_id" = Uuid, Path)), request_body = ConnectAccount, security(("api_key" = [])),
    responses((status = 201, body = CloudAccountView), (status = 402, body = crate::error::Problem)))]
pub async fn connect_account(
    State(state): State<AppState>,
    principal: Principal,
    info: RequestInfo,
    headers: HeaderMap,
    ApiPath(tenant_id): ApiPath<Uuid>,
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
    let command = CloudAccountsCommand::Connect {
        account: NewAccount {
            account_id: account_id.clone(),
            alias,
            region: region.unwrap(),
            role_arn: role_arn.unwrap(),
            environment: environment.unwrap(),
            source: AccountSource::Standalone,
        },
        max_accounts: state.billing.entitlements(tenant_id).await?.max_accounts,
    };
    // Decided again when a concurrent connect wins: the limit sees it.
    let committed = state
        .cloud_accounts
        .execute_retrying(tenant_id, (tenant_id, command), &member.metadata(&info), RETRIES)
        .await?;
    state.settle(committed).await;
    let view = account_view(&state, tenant_id, account_id.as_str()).await?;
    Ok((StatusCode::CREATED, view))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AccountQuery {
    /// production, staging or development.
    pub environment: Option<String>,
    /// connected or disconnected.
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
    ApiPath(tenant_id): ApiPath<Uuid>,
    ApiQuery(query): ApiQuery<AccountQuery>,
) -> ApiResult<Json<Page<CloudAccountView>>> {
    principal.in_tenant(tenant_id, &state, &headers).await?;
    let mut fields = Fields::default();
    let environment = query
        .environment
        .as_deref()
        .and_then(|e| fields.check("environment", Environment::parse(e)));
    if let Some(status) = query.status.as_deref()
        && !["connected", "disconnected"].contains(&status)
    {
        fields.check::<(), _>("status", Err("must be connected or disconnected"));
    }
    fields.finish()?;
    let limit = limit(query.limit)?;
    let rows: Vec<CloudAccountView> = sqlx::query_as(&format!(
        "SELECT {ACCOUNT_COLUMNS} FROM cloud_accounts
          WHERE tenant_id = $1 AND ($2::text IS NULL OR environment = $2) AND ($3::text IS NULL OR status = $3)
            AND ($4::text IS NULL OR account_id > $4)
          ORDER BY account_id LIMIT $5"
    ))
    .bind(tenant_id)
    .bind(environment.map(Environment::as_str))
    .bind(query.status)
    .bind(query.cursor)
    .bind(limit + 1)
    .fetch_all(&state.pool)
    .await?;
    let (items, next_cursor) = page(rows, limit, |a| a.account_id.clone());
    Ok(Json(Page { items, next_cursor }))
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
    ApiPath((tenant_id, account_id)): ApiPath<(Uuid, String)>,
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
    tenant_id: Uuid,
    account_id: &str,
) -> ApiResult<Json<CloudAccountView>> {
    let account_id = AwsAccountId::parse(account_id)?;
    let command = CloudAccountsCommand::Disconnect {
        account_id: account_id.clone(),
    };
    let metadata = member.metadata(info);
    let committed = state
        .cloud_accounts
        .execute_retrying(tenant_id, (tenant_id, command), &metadata, RETRIES)
        .await?;
    state.settle(committed).await;
    let view = account_view(state, tenant_id, account_id.as_str()).await?;
    if let Some(org_id) = view.organization_id {
        deselect(state, org_id, account_id.as_str(), &metadata).await?;
    }
    Ok(view)
}

pub(super) async fn deselect(
    state: &AppState,
    org_id: Uuid,
    account_id: &str,
    metadata: &coverwatch_commands::CommandMetadata,
) -> ApiResult<()> {
    let command = CloudOrganizationCommand::RecordMemberDisconnected {
        account_id: account_id.to_owned(),
    };
    let committed = state
        .cloud_organizations
        .execute_retrying(org_id, command, metadata, RETRIES)
        .await?;
    state.settle(committed).await;
    Ok(())
}
