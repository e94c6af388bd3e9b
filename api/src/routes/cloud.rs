//! Cloud accounts (standalone) and cloud organizations (registration). The
//! plan's account limit and organization features are decided by the
//! aggregates, with the entitlements handed in from the subscription.

use super::{Fields, Page, limit, page, uuid_cursor};
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
use coverwatch_domain::cloud::role_template::RoleTemplate;
use coverwatch_domain::cloud::values::{AwsAccountId, Environment, Provider, Region, RoleArn};
use coverwatch_domain::cloud::{AccountSource, CloudAccountsCommand, CloudOrganizationCommand, NewAccount};
use coverwatch_domain::values::{Name, Role};
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

async fn account_view(state: &AppState, tenant_id: Uuid, account_id: &str) -> ApiResult<Json<CloudAccountView>> {
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
    let account_id = AwsAccountId::parse(&account_id)?;
    let command = CloudAccountsCommand::Disconnect {
        account_id: account_id.clone(),
    };
    let committed = state
        .cloud_accounts
        .execute_retrying(tenant_id, (tenant_id, command), &member.metadata(&info), RETRIES)
        .await?;
    state.settle(committed).await;
    account_view(&state, tenant_id, account_id.as_str()).await
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterOrganization {
    /// aws (gcp later).
    pub provider: String,
    /// The AWS organization id, `o-...`.
    pub organization_id: String,
    pub management_account_id: String,
    /// The role Coverwatch assumes in the management account.
    pub role_arn: String,
    pub name: String,
    /// The audit role's name in member accounts (default CoverwatchAudit).
    pub member_role_name: Option<String>,
}

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct CloudOrganizationView {
    pub id: Uuid,
    pub provider: String,
    pub external_org_id: String,
    pub management_account_id: String,
    pub role_arn: String,
    /// The external id the role's trust policy must require: the tenant's.
    pub external_id: String,
    pub name: String,
    pub member_role_name: String,
    pub status: String,
    pub created_at: DateTime<Utc>,
}

const ORGANIZATION_COLUMNS: &str = "id, provider, external_org_id, management_account_id, role_arn, external_id, name, member_role_name, status, \
     created_at";

/// Register the tenant's AWS organization (owner or admin). Needs the plan's
/// organization features (403 with the tier that has them otherwise).
#[utoipa::path(post, path = "/v1/tenants/{tenant_id}/cloud-organizations", tag = "cloud",
    params(("tenant_id" = Uuid, Path)), request_body = RegisterOrganization, security(("api_key" = [])),
    responses((status = 201, body = CloudOrganizationView), (status = 403, body = crate::error::Problem)))]
pub async fn register_organization(
    State(state): State<AppState>,
    principal: Principal,
    info: RequestInfo,
    headers: HeaderMap,
    ApiPath(tenant_id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<RegisterOrganization>,
) -> ApiResult<impl IntoResponse> {
    let member = principal.in_tenant(tenant_id, &state, &headers).await?;
    member.require(Role::can_administer, "only an owner or admin connects organizations")?;
    let mut fields = Fields::default();
    let provider = fields.check("provider", Provider::parse(body.provider.trim()));
    let management = fields.check(
        "management_account_id",
        AwsAccountId::parse(body.management_account_id.trim()),
    );
    let role_arn = fields.check("role_arn", RoleArn::parse(body.role_arn.trim()));
    let name = fields.check("name", Name::parse(&body.name));
    fields.finish()?;
    let organization_id = Uuid::now_v7();
    let command = CloudOrganizationCommand::Register {
        organization_id,
        tenant_id,
        provider: provider.unwrap(),
        external_org_id: body.organization_id.trim().to_owned(),
        management_account_id: management.unwrap(),
        role_arn: role_arn.unwrap(),
        external_id: format!("coverwatch-{tenant_id}"),
        name: name.unwrap(),
        member_role_name: body
            .member_role_name
            .map(|n| n.trim().to_owned())
            .unwrap_or_else(|| "CoverwatchAudit".into()),
        org_features: state.billing.entitlements(tenant_id).await?.org_features,
        cheapest_with_org_features: state.catalog.cheapest_with_org_features(),
    };
    let committed = state
        .cloud_organizations
        .execute(organization_id, command, &member.metadata(&info))
        .await?;
    state.settle(committed).await;
    let view: CloudOrganizationView = sqlx::query_as(&format!(
        "SELECT {ORGANIZATION_COLUMNS} FROM cloud_organizations WHERE id = $1"
    ))
    .bind(organization_id)
    .fetch_one(&state.pool)
    .await?;
    Ok((StatusCode::CREATED, Json(view)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct OrganizationQuery {
    pub cursor: Option<String>,
    pub limit: Option<i64>,
}

/// The tenant's cloud organizations, oldest first (members).
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/cloud-organizations", tag = "cloud",
    params(("tenant_id" = Uuid, Path), OrganizationQuery), security(("api_key" = [])),
    responses((status = 200, body = Page<CloudOrganizationView>)))]
pub async fn list_organizations(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    ApiPath(tenant_id): ApiPath<Uuid>,
    ApiQuery(query): ApiQuery<OrganizationQuery>,
) -> ApiResult<Json<Page<CloudOrganizationView>>> {
    principal.in_tenant(tenant_id, &state, &headers).await?;
    let limit = limit(query.limit)?;
    // Ids are time-ordered (v7): the id is the cursor.
    let rows: Vec<CloudOrganizationView> = sqlx::query_as(&format!(
        "SELECT {ORGANIZATION_COLUMNS} FROM cloud_organizations
          WHERE tenant_id = $1 AND ($2::uuid IS NULL OR id > $2) ORDER BY id LIMIT $3"
    ))
    .bind(tenant_id)
    .bind(uuid_cursor(query.cursor.as_deref())?)
    .bind(limit + 1)
    .fetch_all(&state.pool)
    .await?;
    let (items, next_cursor) = page(rows, limit, |o| o.id.to_string());
    Ok(Json(Page { items, next_cursor }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct TemplateQuery {
    /// cloudformation (default) or terraform.
    pub format: Option<String>,
}

/// The read-only audit role for the organization's accounts, with the
/// tenant's external id: a CloudFormation StackSet template (JSON) or a
/// Terraform module (members).
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/cloud-organizations/{org_id}/role-template", tag = "cloud",
    params(("tenant_id" = Uuid, Path), ("org_id" = Uuid, Path), TemplateQuery), security(("api_key" = [])),
    responses((status = 200, description = "the template", content_type = "text/plain"),
              (status = 404, body = crate::error::Problem)))]
pub async fn role_template(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    ApiPath((tenant_id, org_id)): ApiPath<(Uuid, Uuid)>,
    ApiQuery(query): ApiQuery<TemplateQuery>,
) -> ApiResult<impl IntoResponse> {
    principal.in_tenant(tenant_id, &state, &headers).await?;
    let row: Option<(String, String)> = sqlx::query_as(
        "SELECT member_role_name, external_id FROM cloud_organizations WHERE id = $1 AND tenant_id = $2",
    )
    .bind(org_id)
    .bind(tenant_id)
    .fetch_optional(&state.pool)
    .await?;
    let (role_name, external_id) = row.ok_or_else(|| crate::error::ApiError::NotFound("cloud organization".into()))?;
    let template = RoleTemplate {
        role_name: &role_name,
        trusted_principal_arn: &state.settings.aws_principal_arn,
        external_id: &external_id,
    };
    let (content_type, body) = match query.format.as_deref().unwrap_or("cloudformation") {
        "cloudformation" => ("application/json", template.cloudformation()),
        "terraform" => ("text/plain; charset=utf-8", template.terraform()),
        _ => {
            return Err(crate::error::ApiError::validation(
                "format",
                "must be cloudformation or terraform",
            ));
        }
    };
    Ok(([(axum::http::header::CONTENT_TYPE, content_type)], body))
}
