//! Members: list, role changes, suspension, removal and ownership transfer.

use super::{Page, etag, if_match, limit, page, uuid_cursor};
use crate::auth::{Member, Principal, RequestInfo};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use coverwatch_domain::ids::{MemberId, TenantId};
use coverwatch_domain::tenant::{TenantCommand, Versioned};
use coverwatch_domain::values::Role;
use coverwatch_projections::directory::{MemberRow, queries};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

#[derive(Debug, Serialize, ToSchema)]
pub struct MemberView {
    pub id: Uuid,
    pub email: String,
    pub role: String,
    pub status: String,
    pub joined_at: DateTime<Utc>,
}

impl From<MemberRow> for MemberView {
    fn from(row: MemberRow) -> Self {
        Self {
            id: row.id.into(),
            email: row.email,
            role: row.role,
            status: row.status,
            joined_at: row.joined_at,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct MemberQuery {
    /// active, suspended or removed; default: active and suspended.
    pub status: Option<String>,
    pub cursor: Option<String>,
    pub limit: Option<i64>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeRole {
    /// admin, analyst, read_only or auditor.
    pub role: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransferOwnership {
    pub member_id: Uuid,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OwnershipView {
    pub owner_member_id: Uuid,
    pub previous_owner_member_id: Uuid,
}

async fn tenant_version(state: &AppState, tenant_id: TenantId) -> ApiResult<i64> {
    queries::tenant_version(&state.pool, tenant_id)
        .await?
        .ok_or_else(|| ApiError::NotFound("tenant".into()))
}

async fn load_member(state: &AppState, tenant_id: TenantId, member_id: MemberId) -> ApiResult<MemberView> {
    queries::member(&state.pool, tenant_id, member_id)
        .await?
        .map(MemberView::from)
        .ok_or_else(|| ApiError::NotFound("member".into()))
}

/// Run a member command and answer with the member as it now is.
async fn member_command(
    state: &AppState,
    member: &Member,
    info: &RequestInfo,
    headers: &HeaderMap,
    member_id: MemberId,
    command: TenantCommand,
) -> ApiResult<impl IntoResponse + use<>> {
    let command = Versioned {
        expected_version: if_match(headers)?,
        command,
    };
    let committed = state
        .tenants
        .execute(member.tenant_id, command, &member.metadata(info))
        .await?;
    state
        .settle_or_accepted(
            committed,
            format!("/v1/tenants/{}/members/{member_id}", member.tenant_id),
        )
        .await?;
    let view = load_member(state, member.tenant_id, member_id).await?;
    Ok(([etag(committed.version)], Json(view)))
}

/// The tenant's members, oldest first.
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/members", tag = "members",
    params(("tenant_id" = Uuid, Path), MemberQuery), security(("api_key" = [])),
    responses((status = 200, body = Page<MemberView>)))]
pub async fn list_members(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    ApiPath(tenant_id): ApiPath<TenantId>,
    ApiQuery(query): ApiQuery<MemberQuery>,
) -> ApiResult<impl IntoResponse> {
    principal.in_tenant(tenant_id, &state, &headers).await?;
    let version = tenant_version(&state, tenant_id).await?;
    let limit = limit(query.limit)?;
    let cursor = uuid_cursor(query.cursor.as_deref())?;
    if let Some(status) = &query.status
        && !["active", "suspended", "removed"].contains(&status.as_str())
    {
        return Err(ApiError::validation("status", "must be active, suspended or removed"));
    }
    let rows = queries::members_page(&state.pool, tenant_id, query.status.as_deref(), cursor, limit + 1).await?;
    let (rows, next_cursor) = page(rows, limit, |m| m.id.to_string());
    let items = rows.into_iter().map(MemberView::from).collect();
    Ok(([etag(version)], Json(Page { items, next_cursor })))
}

/// One member.
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/members/{member_id}", tag = "members",
    params(("tenant_id" = Uuid, Path), ("member_id" = Uuid, Path)), security(("api_key" = [])),
    responses((status = 200, body = MemberView), (status = 404, body = crate::error::Problem)))]
pub async fn get_member(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    ApiPath((tenant_id, member_id)): ApiPath<(TenantId, MemberId)>,
) -> ApiResult<impl IntoResponse> {
    principal.in_tenant(tenant_id, &state, &headers).await?;
    let version = tenant_version(&state, tenant_id).await?;
    Ok(([etag(version)], Json(load_member(&state, tenant_id, member_id).await?)))
}

/// Change a member's role (owner or admin). The owner's role changes only by
/// ownership transfer.
#[utoipa::path(patch, path = "/v1/tenants/{tenant_id}/members/{member_id}", tag = "members",
    params(("tenant_id" = Uuid, Path), ("member_id" = Uuid, Path)), request_body = ChangeRole,
    security(("api_key" = [])),
    responses((status = 200, body = MemberView), (status = 422, body = crate::error::Problem)))]
pub async fn change_role(
    State(state): State<AppState>,
    principal: Principal,
    info: RequestInfo,
    headers: HeaderMap,
    ApiPath((tenant_id, member_id)): ApiPath<(TenantId, MemberId)>,
    ApiJson(body): ApiJson<ChangeRole>,
) -> ApiResult<impl IntoResponse> {
    let member = principal.in_tenant(tenant_id, &state, &headers).await?;
    let role = Role::parse(&body.role)?;
    let command = TenantCommand::ChangeMemberRole {
        by: member.actor(),
        member_id,
        role,
    };
    member_command(&state, &member, &info, &headers, member_id, command).await
}

/// Suspend a member: its keys stop working until it is reactivated.
#[utoipa::path(post, path = "/v1/tenants/{tenant_id}/members/{member_id}/suspend", tag = "members",
    params(("tenant_id" = Uuid, Path), ("member_id" = Uuid, Path)), security(("api_key" = [])),
    responses((status = 200, body = MemberView)))]
pub async fn suspend_member(
    State(state): State<AppState>,
    principal: Principal,
    info: RequestInfo,
    headers: HeaderMap,
    ApiPath((tenant_id, member_id)): ApiPath<(TenantId, MemberId)>,
) -> ApiResult<impl IntoResponse> {
    let member = principal.in_tenant(tenant_id, &state, &headers).await?;
    let command = TenantCommand::SuspendMember {
        by: member.actor(),
        member_id,
    };
    member_command(&state, &member, &info, &headers, member_id, command).await
}

/// Reactivate a suspended member.
#[utoipa::path(post, path = "/v1/tenants/{tenant_id}/members/{member_id}/reactivate", tag = "members",
    params(("tenant_id" = Uuid, Path), ("member_id" = Uuid, Path)), security(("api_key" = [])),
    responses((status = 200, body = MemberView)))]
pub async fn reactivate_member(
    State(state): State<AppState>,
    principal: Principal,
    info: RequestInfo,
    headers: HeaderMap,
    ApiPath((tenant_id, member_id)): ApiPath<(TenantId, MemberId)>,
) -> ApiResult<impl IntoResponse> {
    let member = principal.in_tenant(tenant_id, &state, &headers).await?;
    let command = TenantCommand::ReactivateMember {
        by: member.actor(),
        member_id,
    };
    member_command(&state, &member, &info, &headers, member_id, command).await
}

/// Remove a member (kept in the history, listed with `status=removed`).
#[utoipa::path(delete, path = "/v1/tenants/{tenant_id}/members/{member_id}", tag = "members",
    params(("tenant_id" = Uuid, Path), ("member_id" = Uuid, Path)), security(("api_key" = [])),
    responses((status = 204), (status = 422, body = crate::error::Problem)))]
pub async fn remove_member(
    State(state): State<AppState>,
    principal: Principal,
    info: RequestInfo,
    headers: HeaderMap,
    ApiPath((tenant_id, member_id)): ApiPath<(TenantId, MemberId)>,
) -> ApiResult<StatusCode> {
    let member = principal.in_tenant(tenant_id, &state, &headers).await?;
    let command = Versioned {
        expected_version: if_match(&headers)?,
        command: TenantCommand::RemoveMember {
            by: member.actor(),
            member_id,
        },
    };
    let committed = state
        .tenants
        .execute(tenant_id, command, &member.metadata(&info))
        .await?;
    state.settle(committed).await;
    Ok(StatusCode::NO_CONTENT)
}

/// Hand ownership to another active member (owner only); the previous owner
/// becomes an admin.
#[utoipa::path(post, path = "/v1/tenants/{tenant_id}/transfer-ownership", tag = "members",
    params(("tenant_id" = Uuid, Path)), request_body = TransferOwnership, security(("api_key" = [])),
    responses((status = 200, body = OwnershipView), (status = 403, body = crate::error::Problem)))]
pub async fn transfer_ownership(
    State(state): State<AppState>,
    principal: Principal,
    info: RequestInfo,
    headers: HeaderMap,
    ApiPath(tenant_id): ApiPath<TenantId>,
    ApiJson(body): ApiJson<TransferOwnership>,
) -> ApiResult<impl IntoResponse> {
    let member = principal.in_tenant(tenant_id, &state, &headers).await?;
    let command = Versioned {
        expected_version: if_match(&headers)?,
        command: TenantCommand::TransferOwnership {
            by: member.actor(),
            to_member_id: body.member_id.into(),
        },
    };
    let committed = state
        .tenants
        .execute(tenant_id, command, &member.metadata(&info))
        .await?;
    state.settle(committed).await;
    Ok((
        [etag(committed.version)],
        Json(OwnershipView {
            owner_member_id: body.member_id,
            previous_owner_member_id: member.member_id.into(),
        }),
    ))
}
