//! Cloud organizations: registration, the audit role template, discovery
//! runs, the hierarchy and members, connecting members, and the
//! organization's detail (status, counts, delegated administrators, SCPs,
//! sources). Organization features are decided by the aggregates.

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

use super::cloud_accounts::{deselect, disconnect};

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

#[derive(Debug, Serialize, ToSchema)]
pub struct DiscoveryStarted {
    pub run_id: Uuid,
}

/// The tenant's organization, as discovery reaches it (404 for another
/// tenant's).
pub(super) async fn organization_of(
    state: &AppState,
    tenant_id: Uuid,
    org_id: Uuid,
) -> ApiResult<crate::discovery::Target> {
    let row: Option<(String, String, String)> = sqlx::query_as(
        "SELECT role_arn, external_id, external_org_id FROM cloud_organizations WHERE id = $1 AND tenant_id = $2",
    )
    .bind(org_id)
    .bind(tenant_id)
    .fetch_optional(&state.pool)
    .await?;
    let (role_arn, external_id, external_org_id) =
        row.ok_or_else(|| crate::error::ApiError::NotFound("cloud organization".into()))?;
    Ok(crate::discovery::Target {
        org_id,
        role_arn,
        external_id,
        external_org_id,
    })
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
    ApiPath((tenant_id, org_id)): ApiPath<(Uuid, Uuid)>,
) -> ApiResult<impl IntoResponse> {
    let member = principal.in_tenant(tenant_id, &state, &headers).await?;
    member.require(Role::can_administer, "only an owner or admin runs discovery")?;
    let target = organization_of(&state, tenant_id, org_id).await?;
    if !state.billing.entitlements(tenant_id).await?.org_features {
        return Err(crate::error::ApiError::PlanFeature {
            feature: "organization features".into(),
            required_tier: state.catalog.cheapest_with_org_features().to_string(),
        });
    }
    let run_id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO discovery_runs (run_id, organization_id, tenant_id, status, started_at)
         VALUES ($1, $2, $3, 'running', $4)",
    )
    .bind(run_id)
    .bind(org_id)
    .bind(tenant_id)
    .bind(state.clock.now())
    .execute(&state.pool)
    .await?;
    let metadata = member.metadata(&info);
    tokio::spawn(crate::discovery::run(state.clone(), target, run_id, metadata));
    Ok((StatusCode::ACCEPTED, Json(DiscoveryStarted { run_id })))
}

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct DiscoveryRunView {
    pub run_id: Uuid,
    /// running, done, partial or failed.
    pub status: String,
    pub pages: i64,
    pub ous: i64,
    pub accounts: i64,
    #[schema(value_type = Vec<String>)]
    pub errors: sqlx::types::Json<Vec<String>>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// A discovery run's progress (members).
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/cloud-organizations/{org_id}/discover/{run_id}", tag = "cloud",
    params(("tenant_id" = Uuid, Path), ("org_id" = Uuid, Path), ("run_id" = Uuid, Path)), security(("api_key" = [])),
    responses((status = 200, body = DiscoveryRunView), (status = 404, body = crate::error::Problem)))]
pub async fn discovery_run(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    ApiPath((tenant_id, org_id, run_id)): ApiPath<(Uuid, Uuid, Uuid)>,
) -> ApiResult<Json<DiscoveryRunView>> {
    principal.in_tenant(tenant_id, &state, &headers).await?;
    let run: Option<DiscoveryRunView> = sqlx::query_as(
        "SELECT run_id, status, pages, ous, accounts, errors, started_at, finished_at FROM discovery_runs
          WHERE run_id = $1 AND organization_id = $2 AND tenant_id = $3",
    )
    .bind(run_id)
    .bind(org_id)
    .bind(tenant_id)
    .fetch_optional(&state.pool)
    .await?;
    run.map(Json)
        .ok_or_else(|| crate::error::ApiError::NotFound("discovery run".into()))
}

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct MemberView {
    pub account_id: String,
    pub name: String,
    pub email: String,
    /// AWS's status (ACTIVE, SUSPENDED, ...).
    pub aws_status: String,
    pub parent_id: String,
    pub path: String,
    pub path_ids: Vec<String>,
    /// discovered, connecting, connected or error.
    pub lifecycle: String,
    /// Why connecting failed (the AWS error), when it did.
    pub status_reason: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct MemberQuery {
    /// `Root/Production` selects that subtree.
    pub path_prefix: Option<String>,
    /// discovered, connecting, connected or error.
    pub status: Option<String>,
    /// AWS status, e.g. ACTIVE or SUSPENDED.
    pub aws_status: Option<String>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Page size, 1 to 500 (default 50).
    pub limit: Option<i64>,
}

const LIFECYCLES: [&str; 4] = ["discovered", "connecting", "connected", "error"];

/// Members are listed by (path, account id); the cursor is that pair, hex
/// encoded (paths hold any character an OU name may).
fn member_cursor(member: &MemberView) -> String {
    hex::encode(format!("{}\n{}", member.path, member.account_id))
}

fn parse_member_cursor(cursor: &str) -> ApiResult<(String, String)> {
    hex::decode(cursor)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|text| {
            let (path, account) = text.rsplit_once('\n')?;
            AwsAccountId::parse(account).ok()?;
            Some((path.to_owned(), account.to_owned()))
        })
        .ok_or_else(|| crate::error::ApiError::validation("cursor", "is not a cursor this API returned"))
}

/// The organization's discovered member accounts by path, a page at a time
/// (members).
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/cloud-organizations/{org_id}/members", tag = "cloud",
    params(("tenant_id" = Uuid, Path), ("org_id" = Uuid, Path), MemberQuery), security(("api_key" = [])),
    responses((status = 200, body = Page<MemberView>)))]
pub async fn members(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    ApiPath((tenant_id, org_id)): ApiPath<(Uuid, Uuid)>,
    ApiQuery(query): ApiQuery<MemberQuery>,
) -> ApiResult<Json<Page<MemberView>>> {
    principal.in_tenant(tenant_id, &state, &headers).await?;
    organization_of(&state, tenant_id, org_id).await?;
    let mut fields = Fields::default();
    if let Some(status) = query.status.as_deref()
        && !LIFECYCLES.contains(&status)
    {
        fields.check::<(), _>("status", Err("must be discovered, connecting, connected or error"));
    }
    if let Some(aws_status) = query.aws_status.as_deref()
        && (aws_status.is_empty() || !aws_status.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
    {
        fields.check::<(), _>(
            "aws_status",
            Err("must be an AWS account status such as ACTIVE or SUSPENDED"),
        );
    }
    fields.finish()?;
    let limit = limit(query.limit)?;
    let (after_path, after_account) = match query.cursor.as_deref().map(parse_member_cursor).transpose()? {
        Some((path, account)) => (Some(path), Some(account)),
        None => (None, None),
    };
    let prefix = query.path_prefix.map(|p| p.trim_end_matches('/').to_owned());
    let rows: Vec<MemberView> = sqlx::query_as(
        "SELECT account_id, name, email, aws_status, parent_id, path, path_ids, lifecycle, status_reason
           FROM cloud_org_members
          WHERE organization_id = $1
            AND ($2::text IS NULL OR path = $2 OR starts_with(path, $2 || '/'))
            AND ($3::text IS NULL OR lifecycle = $3)
            AND ($4::text IS NULL OR aws_status = $4)
            AND ($5::text IS NULL OR (path, account_id) > ($5, $6))
          ORDER BY path, account_id
          LIMIT $7",
    )
    .bind(org_id)
    .bind(prefix)
    .bind(query.status)
    .bind(query.aws_status)
    .bind(after_path)
    .bind(after_account)
    .bind(limit + 1)
    .fetch_all(&state.pool)
    .await?;
    let (items, next_cursor) = page(rows, limit, member_cursor);
    Ok(Json(Page { items, next_cursor }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HierarchyNode {
    pub id: String,
    pub name: String,
    pub path: String,
    pub accounts: Vec<String>,
    #[schema(no_recursion)]
    pub children: Vec<HierarchyNode>,
}

/// The organization's hierarchy as a tree from the root (members).
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/cloud-organizations/{org_id}/hierarchy", tag = "cloud",
    params(("tenant_id" = Uuid, Path), ("org_id" = Uuid, Path)), security(("api_key" = [])),
    responses((status = 200, body = HierarchyNode)))]
pub async fn hierarchy(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    ApiPath((tenant_id, org_id)): ApiPath<(Uuid, Uuid)>,
) -> ApiResult<Json<HierarchyNode>> {
    principal.in_tenant(tenant_id, &state, &headers).await?;
    organization_of(&state, tenant_id, org_id).await?;
    let units: Vec<(String, String, String, String, Vec<String>)> = sqlx::query_as(
        "SELECT ou_id, name, parent_id, path, path_ids FROM cloud_org_units WHERE organization_id = $1 ORDER BY path",
    )
    .bind(org_id)
    .fetch_all(&state.pool)
    .await?;
    let accounts: Vec<(String, String)> = sqlx::query_as(
        "SELECT account_id, parent_id FROM cloud_org_members WHERE organization_id = $1 ORDER BY account_id",
    )
    .bind(org_id)
    .fetch_all(&state.pool)
    .await?;
    let root_id = units
        .iter()
        .find_map(|u| u.4.first().cloned())
        .or_else(|| accounts.first().map(|a| a.1.clone()))
        .unwrap_or_default();
    fn build(
        id: &str,
        name: &str,
        path: &str,
        units: &[(String, String, String, String, Vec<String>)],
        accounts: &[(String, String)],
    ) -> HierarchyNode {
        HierarchyNode {
            id: id.to_owned(),
            name: name.to_owned(),
            path: path.to_owned(),
            accounts: accounts.iter().filter(|a| a.1 == id).map(|a| a.0.clone()).collect(),
            children: units
                .iter()
                .filter(|u| u.2 == id)
                .map(|u| build(&u.0, &u.1, &u.3, units, accounts))
                .collect(),
        }
    }
    Ok(Json(build(&root_id, "Root", "Root", &units, &accounts)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectMembers {
    /// These accounts...
    pub account_ids: Option<Vec<String>>,
    /// ...or every active member...
    pub all_active: Option<bool>,
    /// ...or the active members of a subtree (`Root/Production`).
    pub path_prefix: Option<String>,
    /// For the connected accounts (default production).
    pub environment: Option<String>,
    /// Default region recorded for them (default us-east-1).
    pub region: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MemberConnection {
    pub account_id: String,
    /// connected, already_connected, error or refused (plan limit).
    pub status: String,
    pub reason: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MemberConnections {
    pub results: Vec<MemberConnection>,
}

/// Connect members (owner or admin): each account's audit role is assumed
/// (STS, the tenant's external id); a success connects the account against
/// the plan's account limit, a failure is recorded as the member's status
/// reason. Suspended or closed accounts cannot be connected.
#[utoipa::path(post, path = "/v1/tenants/{tenant_id}/cloud-organizations/{org_id}/members/connect", tag = "cloud",
    params(("tenant_id" = Uuid, Path), ("org_id" = Uuid, Path)), request_body = ConnectMembers,
    security(("api_key" = [])),
    responses((status = 200, body = MemberConnections), (status = 402, body = crate::error::Problem),
              (status = 403, body = crate::error::Problem)))]
pub async fn connect_members(
    State(state): State<AppState>,
    principal: Principal,
    info: RequestInfo,
    headers: HeaderMap,
    ApiPath((tenant_id, org_id)): ApiPath<(Uuid, Uuid)>,
    ApiJson(body): ApiJson<ConnectMembers>,
) -> ApiResult<Json<MemberConnections>> {
    use crate::error::ApiError;
    let member = principal.in_tenant(tenant_id, &state, &headers).await?;
    member.require(Role::can_administer, "only an owner or admin connects members")?;
    organization_of(&state, tenant_id, org_id).await?;
    let mut fields = Fields::default();
    let environment = fields.check(
        "environment",
        Environment::parse(body.environment.as_deref().unwrap_or("production")),
    );
    let region = fields.check("region", Region::parse(body.region.as_deref().unwrap_or("us-east-1")));
    let selections = [
        body.account_ids.is_some(),
        body.all_active == Some(true),
        body.path_prefix.is_some(),
    ];
    if selections.iter().filter(|s| **s).count() != 1 {
        fields.check::<(), _>("body", Err("choose one of account_ids, all_active or path_prefix"));
    }
    if let Some(ids) = &body.account_ids {
        if ids.is_empty() || ids.len() > 1000 {
            fields.check::<(), _>("account_ids", Err("must list 1 to 1,000 accounts"));
        }
        for id in ids {
            fields.check("account_ids", AwsAccountId::parse(id));
        }
    }
    fields.finish()?;
    let entitlements = state.billing.entitlements(tenant_id).await?;
    if !entitlements.org_features {
        return Err(ApiError::PlanFeature {
            feature: "organization features".into(),
            required_tier: state.catalog.cheapest_with_org_features().to_string(),
        });
    }
    let (member_role, external_id): (String, String) =
        sqlx::query_as("SELECT member_role_name, external_id FROM cloud_organizations WHERE id = $1")
            .bind(org_id)
            .fetch_one(&state.pool)
            .await?;
    let members: Vec<(String, String)> = sqlx::query_as(
        "SELECT account_id, aws_status FROM cloud_org_members
          WHERE organization_id = $1
            AND ($2::text[] IS NULL OR account_id = ANY($2))
            AND ($3::text IS NULL OR path = $3 OR starts_with(path, $3 || '/'))
            AND ($4 OR aws_status = 'ACTIVE')
          ORDER BY account_id",
    )
    .bind(org_id)
    .bind(&body.account_ids)
    .bind(body.path_prefix.as_deref().map(|p| p.trim_end_matches('/')))
    .bind(body.account_ids.is_some())
    .fetch_all(&state.pool)
    .await?;
    if let Some(ids) = &body.account_ids
        && let Some(unknown) = ids.iter().find(|id| !members.iter().any(|(m, _)| m == *id))
    {
        return Err(ApiError::NotFound(format!("member account {unknown}")));
    }
    let metadata = member.metadata(&info);
    let (environment, region) = (environment.unwrap(), region.unwrap());
    let mut results = vec![];
    // Suspended or closed accounts are refused up front; the rest are
    // selected (connecting) in the organization before any AWS call.
    let (active, inactive): (Vec<_>, Vec<_>) = members.into_iter().partition(|(_, status)| status == "ACTIVE");
    for (account_id, aws_status) in inactive {
        results.push(MemberConnection {
            account_id,
            status: "error".into(),
            reason: Some(format!("the account is {aws_status}: it cannot be connected")),
        });
    }
    let account_ids: Vec<String> = active.into_iter().map(|(id, _)| id).collect();
    if !account_ids.is_empty() {
        let command = CloudOrganizationCommand::RequestMemberConnections {
            account_ids: account_ids.clone(),
        };
        state
            .cloud_organizations
            .execute_retrying(org_id, command, &metadata, RETRIES)
            .await?;
    }
    let mut limit_refusals = None;
    for account_id in account_ids {
        let outcome = connect_member(
            &state,
            tenant_id,
            org_id,
            &account_id,
            &member_role,
            &external_id,
            &metadata,
            environment,
            &region,
        )
        .await?;
        if let MemberOutcome::Refused { used, limit } = outcome {
            limit_refusals = Some((used, limit));
        }
        results.push(outcome.view(account_id));
    }
    // Nothing could be connected because of the limit: that is a 402.
    if let Some((used, limit)) = limit_refusals
        && results.iter().all(|r| r.status == "refused")
    {
        return Err(ApiError::PlanLimit {
            metric: "cloud_accounts".into(),
            used,
            limit,
        });
    }
    Ok(Json(MemberConnections { results }))
}

enum MemberOutcome {
    Connected,
    AlreadyConnected,
    Failed(String),
    Refused { used: u64, limit: u64 },
}

impl MemberOutcome {
    fn view(self, account_id: String) -> MemberConnection {
        let (status, reason) = match self {
            Self::Connected => ("connected", None),
            Self::AlreadyConnected => ("already_connected", None),
            Self::Failed(reason) => ("error", Some(reason)),
            Self::Refused { limit, .. } => ("refused", Some(format!("the plan allows {limit} cloud accounts"))),
        };
        MemberConnection {
            account_id,
            status: status.into(),
            reason,
        }
    }
}

/// Assumes the member's audit role, connects it against the plan's limit and
/// records the outcome in the organization (connected, failed with the AWS
/// error, or deselected when the plan refused it).
#[allow(clippy::too_many_arguments)]
async fn connect_member(
    state: &AppState,
    tenant_id: Uuid,
    org_id: Uuid,
    account_id: &str,
    member_role: &str,
    external_id: &str,
    metadata: &coverwatch_commands::CommandMetadata,
    environment: Environment,
    region: &Region,
) -> ApiResult<MemberOutcome> {
    use coverwatch_commands::CommandError;
    use coverwatch_domain::cloud::CloudError;
    let role_arn = format!("arn:aws:iam::{account_id}:role/{member_role}");
    let (outcome, record) = match state.discovery.verify_role(&role_arn, external_id).await {
        Err(reason) => (
            MemberOutcome::Failed(reason.clone()),
            CloudOrganizationCommand::RecordMemberFailure {
                account_id: account_id.to_owned(),
                reason,
            },
        ),
        Ok(()) => {
            let command = CloudAccountsCommand::Connect {
                account: NewAccount {
                    account_id: AwsAccountId::parse(account_id)?,
                    alias: None,
                    region: region.clone(),
                    role_arn: RoleArn::parse(&role_arn)?,
                    environment,
                    source: AccountSource::Organization(org_id),
                },
                max_accounts: state.billing.entitlements(tenant_id).await?.max_accounts,
            };
            let connected = CloudOrganizationCommand::RecordMemberConnected {
                account_id: account_id.to_owned(),
            };
            match state
                .cloud_accounts
                .execute_retrying(tenant_id, (tenant_id, command), metadata, RETRIES)
                .await
            {
                Ok(committed) => {
                    state.settle(committed).await;
                    (MemberOutcome::Connected, connected)
                }
                Err(CommandError::Cloud(CloudError::Conflict(_))) => (MemberOutcome::AlreadyConnected, connected),
                Err(CommandError::Cloud(CloudError::LimitReached { used, limit })) => (
                    MemberOutcome::Refused { used, limit },
                    CloudOrganizationCommand::RecordMemberDisconnected {
                        account_id: account_id.to_owned(),
                    },
                ),
                Err(other) => return Err(other.into()),
            }
        }
    };
    let committed = state
        .cloud_organizations
        .execute_retrying(org_id, record, metadata, RETRIES)
        .await?;
    state.settle(committed).await;
    Ok(outcome)
}

/// Disconnect a member account (owner or admin): it stays discovered. A
/// member whose connection failed is deselected the same way.
#[utoipa::path(post, path = "/v1/tenants/{tenant_id}/cloud-organizations/{org_id}/members/{account_id}/disconnect",
    tag = "cloud", params(("tenant_id" = Uuid, Path), ("org_id" = Uuid, Path), ("account_id" = String, Path)),
    security(("api_key" = [])), responses((status = 200, body = MemberView), (status = 404, body = crate::error::Problem)))]
pub async fn disconnect_member(
    State(state): State<AppState>,
    principal: Principal,
    info: RequestInfo,
    headers: HeaderMap,
    ApiPath((tenant_id, org_id, account_id)): ApiPath<(Uuid, Uuid, String)>,
) -> ApiResult<Json<MemberView>> {
    let member = principal.in_tenant(tenant_id, &state, &headers).await?;
    member.require(Role::can_administer, "only an owner or admin disconnects members")?;
    organization_of(&state, tenant_id, org_id).await?;
    let view = member_view(&state, org_id, &account_id).await?;
    match disconnect(&state, &member, &info, tenant_id, &account_id).await {
        Ok(_) => {}
        // Never connected (e.g. its role could not be assumed): deselect it.
        Err(crate::error::ApiError::NotFound(_)) if view.lifecycle != "connected" => {
            deselect(&state, org_id, &account_id, &member.metadata(&info)).await?;
        }
        Err(other) => return Err(other),
    }
    Ok(Json(member_view(&state, org_id, &account_id).await?))
}

async fn member_view(state: &AppState, org_id: Uuid, account_id: &str) -> ApiResult<MemberView> {
    let row: Option<MemberView> = sqlx::query_as(
        "SELECT account_id, name, email, aws_status, parent_id, path, path_ids, lifecycle, status_reason
           FROM cloud_org_members WHERE organization_id = $1 AND account_id = $2",
    )
    .bind(org_id)
    .bind(account_id)
    .fetch_optional(&state.pool)
    .await?;
    row.ok_or_else(|| crate::error::ApiError::NotFound(format!("member account {account_id}")))
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

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
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

/// One cloud organization with its counts and last discovery (members).
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/cloud-organizations/{org_id}", tag = "cloud",
    params(("tenant_id" = Uuid, Path), ("org_id" = Uuid, Path)), security(("api_key" = [])),
    responses((status = 200, body = OrganizationDetail), (status = 404, body = crate::error::Problem)))]
pub async fn get_organization(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    ApiPath((tenant_id, org_id)): ApiPath<(Uuid, Uuid)>,
) -> ApiResult<Json<OrganizationDetail>> {
    principal.in_tenant(tenant_id, &state, &headers).await?;
    let organization: Option<CloudOrganizationView> = sqlx::query_as(&format!(
        "SELECT {ORGANIZATION_COLUMNS} FROM cloud_organizations WHERE id = $1 AND tenant_id = $2"
    ))
    .bind(org_id)
    .bind(tenant_id)
    .fetch_optional(&state.pool)
    .await?;
    let organization = organization.ok_or_else(|| crate::error::ApiError::NotFound("cloud organization".into()))?;
    let (units, members, connected, failed): (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM cloud_org_units WHERE organization_id = $1),
                count(*), count(*) FILTER (WHERE lifecycle = 'connected'), count(*) FILTER (WHERE lifecycle = 'error')
           FROM cloud_org_members WHERE organization_id = $1",
    )
    .bind(org_id)
    .fetch_one(&state.pool)
    .await?;
    let (discovery_status, delegated_administrators, service_control_policies): (
        Option<String>,
        serde_json::Value,
        serde_json::Value,
    ) = sqlx::query_as(
        "SELECT discovery_status, delegated_administrators, service_control_policies
           FROM cloud_organizations WHERE id = $1",
    )
    .bind(org_id)
    .fetch_one(&state.pool)
    .await?;
    let sources: Vec<SourceView> = sqlx::query_as(
        "SELECT source_id, kind, name, account_id, detail FROM cloud_org_sources
          WHERE organization_id = $1 ORDER BY kind, source_id",
    )
    .bind(org_id)
    .fetch_all(&state.pool)
    .await?;
    let last_discovery: Option<DiscoveryRunView> = sqlx::query_as(
        "SELECT run_id, status, pages, ous, accounts, errors, started_at, finished_at FROM discovery_runs
          WHERE organization_id = $1 ORDER BY started_at DESC, run_id DESC LIMIT 1",
    )
    .bind(org_id)
    .fetch_optional(&state.pool)
    .await?;
    Ok(Json(OrganizationDetail {
        organization,
        organizational_units: units,
        members,
        connected_members: connected,
        failed_members: failed,
        discovery_status,
        delegated_administrators,
        service_control_policies,
        sources,
        last_discovery,
    }))
}
