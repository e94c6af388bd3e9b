//! Cloud organizations: registration, the audit role template, discovery
//! runs, and the organization's detail (status, counts, delegated
//! administrators, SCPs, sources). Members are in `organization_members`.
//! Organization features are decided by the aggregates and workflows.

use super::{Fields, Page, limit, page, uuid_cursor};
use crate::auth::{Principal, RequestInfo};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use coverwatch_commands::services::cloud_organizations::Registration;
use coverwatch_commands::workflows::discovery::{self, RunRow};
use coverwatch_domain::cloud::role_template::RoleTemplate;
use coverwatch_domain::cloud::values::{AwsAccountId, Provider, RoleArn};
use coverwatch_domain::ids::{OrganizationId, RunId, TenantId};
use coverwatch_domain::values::{Name, Role};
use coverwatch_projections::cloud::queries::{self, OrganizationRow, SourceRow};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

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

#[derive(Debug, Serialize, ToSchema)]
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

impl From<OrganizationRow> for CloudOrganizationView {
    fn from(row: OrganizationRow) -> Self {
        Self {
            id: row.id.into(),
            provider: row.provider,
            external_org_id: row.external_org_id,
            management_account_id: row.management_account_id,
            role_arn: row.role_arn,
            external_id: row.external_id,
            name: row.name,
            member_role_name: row.member_role_name,
            status: row.status,
            created_at: row.created_at,
        }
    }
}

/// The tenant's organization (404 for another tenant's).
pub(super) async fn organization_of(
    state: &AppState,
    tenant_id: TenantId,
    org_id: OrganizationId,
) -> ApiResult<OrganizationRow> {
    queries::organization(&state.pool, tenant_id, org_id)
        .await?
        .ok_or_else(|| ApiError::NotFound("cloud organization".into()))
}

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
    ApiPath(tenant_id): ApiPath<TenantId>,
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
    let registration = Registration {
        provider: provider.unwrap(),
        external_org_id: body.organization_id.trim().to_owned(),
        management_account_id: management.unwrap(),
        role_arn: role_arn.unwrap(),
        name: name.unwrap(),
        member_role_name: body
            .member_role_name
            .map(|n| n.trim().to_owned())
            .unwrap_or_else(|| "CoverwatchAudit".into()),
    };
    let (organization_id, committed) = state
        .cloud_organizations
        .register(tenant_id, registration, &member.metadata(&info))
        .await?;
    state
        .settle_or_accepted(
            committed,
            format!("/v1/tenants/{tenant_id}/cloud-organizations/{organization_id}"),
        )
        .await?;
    let view = CloudOrganizationView::from(organization_of(&state, tenant_id, organization_id).await?);
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
    ApiPath(tenant_id): ApiPath<TenantId>,
    ApiQuery(query): ApiQuery<OrganizationQuery>,
) -> ApiResult<Json<Page<CloudOrganizationView>>> {
    principal.in_tenant(tenant_id, &state, &headers).await?;
    let limit = limit(query.limit)?;
    // Ids are time-ordered (v7): the id is the cursor.
    let after: Option<OrganizationId> = uuid_cursor(query.cursor.as_deref())?;
    let rows = queries::organizations_page(&state.pool, tenant_id, after, limit + 1).await?;
    let (rows, next_cursor) = page(rows, limit, |o| o.id.to_string());
    Ok(Json(Page {
        items: rows.into_iter().map(CloudOrganizationView::from).collect(),
        next_cursor,
    }))
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
    ApiPath((tenant_id, org_id)): ApiPath<(TenantId, OrganizationId)>,
    ApiQuery(query): ApiQuery<TemplateQuery>,
) -> ApiResult<impl IntoResponse> {
    principal.in_tenant(tenant_id, &state, &headers).await?;
    let organization = organization_of(&state, tenant_id, org_id).await?;
    let template = RoleTemplate {
        role_name: &organization.member_role_name,
        trusted_principal_arn: &state.settings.aws.principal_arn,
        external_id: &organization.external_id,
    };
    let (content_type, body) = match query.format.as_deref().unwrap_or("cloudformation") {
        "cloudformation" => ("application/json", template.cloudformation()),
        "terraform" => ("text/plain; charset=utf-8", template.terraform()),
        _ => {
            return Err(ApiError::validation("format", "must be cloudformation or terraform"));
        }
    };
    Ok(([(axum::http::header::CONTENT_TYPE, content_type)], body))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DiscoveryStarted {
    pub run_id: Uuid,
}

/// Start discovering the organization's hierarchy in the background (owner
/// or admin): 202 with the run's id.
#[utoipa::path(post, path = "/v1/tenants/{tenant_id}/cloud-organizations/{org_id}/discover", tag = "cloud",
    params(("tenant_id" = Uuid, Path), ("org_id" = Uuid, Path)), security(("api_key" = [])),
    responses((status = 202, body = DiscoveryStarted), (status = 403, body = crate::error::Problem)))]
pub async fn discover(
    State(state): State<AppState>,
    principal: Principal,
    info: RequestInfo,
    headers: HeaderMap,
    ApiPath((tenant_id, org_id)): ApiPath<(TenantId, OrganizationId)>,
) -> ApiResult<impl IntoResponse> {
    let member = principal.in_tenant(tenant_id, &state, &headers).await?;
    member.require(Role::can_administer, "only an owner or admin runs discovery")?;
    let run_id = state.discovery.start(tenant_id, org_id, member.metadata(&info)).await?;
    Ok((StatusCode::ACCEPTED, Json(DiscoveryStarted { run_id: run_id.into() })))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DiscoveryRunView {
    pub run_id: Uuid,
    /// running, done, partial or failed.
    pub status: String,
    pub pages: i64,
    pub ous: i64,
    pub accounts: i64,
    pub errors: Vec<String>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl From<RunRow> for DiscoveryRunView {
    fn from(row: RunRow) -> Self {
        Self {
            run_id: row.run_id.into(),
            status: row.status,
            pages: row.pages,
            ous: row.ous,
            accounts: row.accounts,
            errors: row.errors.0,
            started_at: row.started_at,
            finished_at: row.finished_at,
        }
    }
}

/// A discovery run's progress (members).
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/cloud-organizations/{org_id}/discover/{run_id}", tag = "cloud",
    params(("tenant_id" = Uuid, Path), ("org_id" = Uuid, Path), ("run_id" = Uuid, Path)), security(("api_key" = [])),
    responses((status = 200, body = DiscoveryRunView), (status = 404, body = crate::error::Problem)))]
pub async fn discovery_run(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    ApiPath((tenant_id, org_id, run_id)): ApiPath<(TenantId, OrganizationId, RunId)>,
) -> ApiResult<Json<DiscoveryRunView>> {
    principal.in_tenant(tenant_id, &state, &headers).await?;
    discovery::run(&state.pool, tenant_id, org_id, run_id)
        .await?
        .map(|run| Json(run.into()))
        .ok_or_else(|| ApiError::NotFound("discovery run".into()))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OrganizationDetail {
    #[serde(flatten)]
    pub organization: CloudOrganizationView,
    pub organizational_units: i64,
    pub members: i64,
    pub connected_members: i64,
    pub failed_members: i64,
    /// The last discovery's own outcome (connected, partial or error).
    pub discovery_status: Option<String>,
    /// Delegated administrators with the service principals they administer.
    #[schema(value_type = Vec<Object>)]
    pub delegated_administrators: serde_json::Value,
    /// SCPs with their targets: preventive controls, never detections.
    #[schema(value_type = Vec<Object>)]
    pub service_control_policies: serde_json::Value,
    /// Organization-level detection sources.
    pub sources: Vec<SourceView>,
    /// The newest discovery run, if any.
    pub last_discovery: Option<DiscoveryRunView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SourceView {
    /// The trail or aggregator ARN, or `guardduty:<account>` / `securityhub:<account>`.
    pub source_id: String,
    /// cloudtrail_organization_trail, config_aggregator, security_hub or guardduty.
    pub kind: String,
    pub name: String,
    pub account_id: String,
    /// What the source says of itself (regions, logging, aggregation scope).
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
}

impl From<SourceRow> for SourceView {
    fn from(row: SourceRow) -> Self {
        Self {
            source_id: row.source_id,
            kind: row.kind,
            name: row.name,
            account_id: row.account_id,
            detail: row.detail,
        }
    }
}

/// One cloud organization with its counts and last discovery (members).
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/cloud-organizations/{org_id}", tag = "cloud",
    params(("tenant_id" = Uuid, Path), ("org_id" = Uuid, Path)), security(("api_key" = [])),
    responses((status = 200, body = OrganizationDetail), (status = 404, body = crate::error::Problem)))]
pub async fn get_organization(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    ApiPath((tenant_id, org_id)): ApiPath<(TenantId, OrganizationId)>,
) -> ApiResult<Json<OrganizationDetail>> {
    principal.in_tenant(tenant_id, &state, &headers).await?;
    let row = organization_of(&state, tenant_id, org_id).await?;
    let counts = queries::organization_counts(&state.pool, org_id).await?;
    let sources = queries::sources(&state.pool, org_id).await?;
    let last_discovery = discovery::latest_run(&state.pool, org_id).await?;
    let (discovery_status, delegated_administrators, service_control_policies) = (
        row.discovery_status.clone(),
        row.delegated_administrators.clone(),
        row.service_control_policies.clone(),
    );
    Ok(Json(OrganizationDetail {
        organization: row.into(),
        organizational_units: counts.units,
        members: counts.members,
        connected_members: counts.connected,
        failed_members: counts.failed,
        discovery_status,
        delegated_administrators,
        service_control_policies,
        sources: sources.into_iter().map(SourceView::from).collect(),
        last_discovery: last_discovery.map(DiscoveryRunView::from),
    }))
}
