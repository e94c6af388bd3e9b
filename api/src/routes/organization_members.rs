//! A cloud organization's members: listed a page at a time by path, its
//! hierarchy as a tree, connecting members (the `connect_members`
//! workflow) and disconnecting them.

use super::cloud_accounts::disconnect;
use super::cloud_organizations::organization_of;
use super::{Fields, Page, limit, page};
use crate::auth::{Principal, RequestInfo};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use coverwatch_commands::workflows::connect_members::{MemberOutcome, Placement, Selection};
use coverwatch_domain::cloud::values::{AwsAccountId, Environment, Region};
use coverwatch_domain::ids::{OrganizationId, TenantId};
use coverwatch_domain::values::Role;
use coverwatch_projections::cloud::queries::{self, MemberFilter, MemberRow, UnitRow};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

#[derive(Debug, Serialize, ToSchema)]
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

impl From<MemberRow> for MemberView {
    fn from(row: MemberRow) -> Self {
        Self {
            account_id: row.account_id,
            name: row.name,
            email: row.email,
            aws_status: row.aws_status,
            parent_id: row.parent_id,
            path: row.path,
            path_ids: row.path_ids,
            lifecycle: row.lifecycle,
            status_reason: row.status_reason,
        }
    }
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
fn member_cursor(member: &MemberRow) -> String {
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
        .ok_or_else(|| ApiError::validation("cursor", "is not a cursor this API returned"))
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
    ApiPath((tenant_id, org_id)): ApiPath<(TenantId, OrganizationId)>,
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
    let after = query.cursor.as_deref().map(parse_member_cursor).transpose()?;
    let filter = MemberFilter {
        path_prefix: query.path_prefix.map(|p| p.trim_end_matches('/').to_owned()),
        lifecycle: query.status,
        aws_status: query.aws_status,
    };
    let rows = queries::members_page(&state.pool, org_id, &filter, after, limit + 1).await?;
    let (rows, next_cursor) = page(rows, limit, member_cursor);
    Ok(Json(Page {
        items: rows.into_iter().map(MemberView::from).collect(),
        next_cursor,
    }))
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
    ApiPath((tenant_id, org_id)): ApiPath<(TenantId, OrganizationId)>,
) -> ApiResult<Json<HierarchyNode>> {
    principal.in_tenant(tenant_id, &state, &headers).await?;
    organization_of(&state, tenant_id, org_id).await?;
    let units = queries::units(&state.pool, org_id).await?;
    let accounts = queries::member_parents(&state.pool, org_id).await?;
    let root_id = units
        .iter()
        .find_map(|u| u.path_ids.first().cloned())
        .or_else(|| accounts.first().map(|a| a.1.clone()))
        .unwrap_or_default();
    fn build(id: &str, name: &str, path: &str, units: &[UnitRow], accounts: &[(String, String)]) -> HierarchyNode {
        HierarchyNode {
            id: id.to_owned(),
            name: name.to_owned(),
            path: path.to_owned(),
            accounts: accounts.iter().filter(|a| a.1 == id).map(|a| a.0.clone()).collect(),
            children: units
                .iter()
                .filter(|u| u.parent_id == id)
                .map(|u| build(&u.ou_id, &u.name, &u.path, units, accounts))
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
    ApiPath((tenant_id, org_id)): ApiPath<(TenantId, OrganizationId)>,
    ApiJson(body): ApiJson<ConnectMembers>,
) -> ApiResult<Json<MemberConnections>> {
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
    let selection = match (body.account_ids, body.path_prefix) {
        (Some(ids), _) => Selection::Accounts(ids),
        (None, Some(prefix)) => Selection::Subtree(prefix),
        (None, None) => Selection::AllActive,
    };
    let placement = Placement {
        environment: environment.unwrap(),
        region: region.unwrap(),
    };
    let outcomes = state
        .connect_members
        .run(tenant_id, org_id, selection, placement, &member.metadata(&info))
        .await?;
    // Nothing could be connected because of the limit: that is a 402.
    let refusal = outcomes.iter().find_map(|(_, outcome)| match outcome {
        MemberOutcome::Refused { used, limit } => Some((*used, *limit)),
        _ => None,
    });
    if let Some((used, limit)) = refusal
        && outcomes.iter().all(|(_, o)| matches!(o, MemberOutcome::Refused { .. }))
    {
        return Err(ApiError::PlanLimit {
            metric: "cloud_accounts".into(),
            used,
            limit,
        });
    }
    let results = outcomes
        .into_iter()
        .map(|(account_id, outcome)| {
            let (status, reason) = match outcome {
                MemberOutcome::Connected => ("connected", None),
                MemberOutcome::AlreadyConnected => ("already_connected", None),
                MemberOutcome::Failed(reason) => ("error", Some(reason)),
                MemberOutcome::Refused { limit, .. } => {
                    ("refused", Some(format!("the plan allows {limit} cloud accounts")))
                }
            };
            MemberConnection {
                account_id,
                status: status.into(),
                reason,
            }
        })
        .collect();
    Ok(Json(MemberConnections { results }))
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
    ApiPath((tenant_id, org_id, account_id)): ApiPath<(TenantId, OrganizationId, String)>,
) -> ApiResult<Json<MemberView>> {
    let member = principal.in_tenant(tenant_id, &state, &headers).await?;
    member.require(Role::can_administer, "only an owner or admin disconnects members")?;
    organization_of(&state, tenant_id, org_id).await?;
    let view = member_view(&state, org_id, &account_id).await?;
    match disconnect(&state, &member, &info, tenant_id, &account_id).await {
        Ok(_) => {}
        // Never connected (e.g. its role could not be assumed): deselect it.
        Err(ApiError::NotFound(_)) if view.lifecycle != "connected" => {
            let committed = state
                .cloud_accounts
                .deselect(org_id, &account_id, &member.metadata(&info))
                .await?;
            state
                .settle_or_accepted(
                    committed,
                    super::cloud_accounts::account_location(tenant_id, &account_id),
                )
                .await?;
        }
        Err(other) => return Err(other),
    }
    Ok(Json(member_view(&state, org_id, &account_id).await?))
}

async fn member_view(state: &AppState, org_id: OrganizationId, account_id: &str) -> ApiResult<MemberView> {
    queries::member(&state.pool, org_id, account_id)
        .await?
        .map(MemberView::from)
        .ok_or_else(|| ApiError::NotFound(format!("member account {account_id}")))
}
