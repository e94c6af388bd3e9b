//! Invitations: an owner or admin invites by e-mail with a role; the invitee
//! accepts with the token (shown once) and receives its own API key.

use super::{Page, limit, page, uuid_cursor};
use crate::auth::{ClientAddress, Principal, RequestInfo, anonymous_metadata};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::routes::Fields;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use chrono::{DateTime, Duration, Utc};
use coverwatch_commands::CommandError;
use coverwatch_commands::idempotency::fresh_id;
use coverwatch_commands::services::TenantService;
use coverwatch_domain::ids::{InvitationId, MemberId, TenantId};
use coverwatch_domain::tenant::{TenantCommand, TenantError};
use coverwatch_domain::values::{Email, Role};
use coverwatch_projections::directory::{InvitationRow, queries};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateInvitation {
    pub email: String,
    /// admin, analyst, read_only or auditor.
    pub role: String,
    /// Hours until the token expires (1 to 720; default from settings, 168).
    pub expires_in_hours: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedInvitation {
    pub id: Uuid,
    /// Shown once: only its hash is stored.
    pub token: String,
    pub expires_at: DateTime<Utc>,
    pub email: String,
    pub role: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InvitationView {
    pub id: Uuid,
    pub email: String,
    pub role: String,
    pub status: String,
    pub invited_by: String,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

impl From<InvitationRow> for InvitationView {
    fn from(row: InvitationRow) -> Self {
        Self {
            id: row.id.into(),
            email: row.email,
            role: row.role,
            status: row.status,
            invited_by: row.invited_by,
            expires_at: row.expires_at,
            created_at: row.created_at,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct InvitationQuery {
    pub cursor: Option<String>,
    pub limit: Option<i64>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AcceptInvitation {
    pub token: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AcceptedInvitation {
    pub tenant_id: Uuid,
    pub member_id: Uuid,
    pub role: String,
    /// The new member's API key. Shown once.
    pub api_key: String,
    pub api_key_id: Uuid,
}

/// Invite someone by e-mail (owner or admin).
#[utoipa::path(post, path = "/v1/tenants/{tenant_id}/invitations", tag = "invitations",
    params(("tenant_id" = Uuid, Path)), request_body = CreateInvitation, security(("api_key" = [])),
    responses((status = 201, body = CreatedInvitation), (status = 409, body = crate::error::Problem)))]
pub async fn create_invitation(
    State(state): State<AppState>,
    principal: Principal,
    info: RequestInfo,
    headers: HeaderMap,
    ApiPath(tenant_id): ApiPath<TenantId>,
    ApiJson(body): ApiJson<CreateInvitation>,
) -> ApiResult<impl IntoResponse> {
    let member = principal.in_tenant(tenant_id, &state, &headers).await?;
    let mut fields = Fields::default();
    let email = fields.check("email", Email::parse(&body.email));
    let role = fields.check("role", Role::parse(&body.role));
    let hours = body
        .expires_in_hours
        .unwrap_or(state.settings.tenants.invitation_ttl_hours);
    if !(1..=720).contains(&hours) {
        fields.check::<(), _>("expires_in_hours", Err("must be between 1 and 720"));
    }
    fields.finish()?;
    let (email, role) = (email.unwrap(), role.unwrap());
    let invited = state
        .tenants
        .invite(
            tenant_id,
            member.actor(),
            email.clone(),
            role,
            Duration::hours(hours),
            &member.metadata(&info),
        )
        .await?;
    state.settle(invited.committed).await;
    Ok((
        StatusCode::CREATED,
        Json(CreatedInvitation {
            id: invited.invitation_id.into(),
            token: invited.token,
            expires_at: invited.expires_at,
            email: email.into(),
            role: role.as_str().into(),
        }),
    ))
}

/// Invitations of the tenant, oldest first (owner or admin).
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/invitations", tag = "invitations",
    params(("tenant_id" = Uuid, Path), InvitationQuery), security(("api_key" = [])),
    responses((status = 200, body = Page<InvitationView>)))]
pub async fn list_invitations(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    ApiPath(tenant_id): ApiPath<TenantId>,
    ApiQuery(query): ApiQuery<InvitationQuery>,
) -> ApiResult<impl IntoResponse> {
    let member = principal.in_tenant(tenant_id, &state, &headers).await?;
    member.require(Role::can_administer, "only an owner or admin sees invitations")?;
    let limit = limit(query.limit)?;
    let after: Option<InvitationId> = uuid_cursor(query.cursor.as_deref())?;
    let rows = queries::invitations_page(&state.pool, tenant_id, after, limit + 1).await?;
    let (rows, next_cursor) = page(rows, limit, |i| i.id.to_string());
    Ok(Json(Page {
        items: rows.into_iter().map(InvitationView::from).collect(),
        next_cursor,
    }))
}

/// Revoke a pending invitation (owner or admin).
#[utoipa::path(delete, path = "/v1/tenants/{tenant_id}/invitations/{invitation_id}", tag = "invitations",
    params(("tenant_id" = Uuid, Path), ("invitation_id" = Uuid, Path)), security(("api_key" = [])),
    responses((status = 204), (status = 404, body = crate::error::Problem)))]
pub async fn revoke_invitation(
    State(state): State<AppState>,
    principal: Principal,
    info: RequestInfo,
    headers: HeaderMap,
    ApiPath((tenant_id, invitation_id)): ApiPath<(TenantId, InvitationId)>,
) -> ApiResult<StatusCode> {
    let member = principal.in_tenant(tenant_id, &state, &headers).await?;
    let command = TenantCommand::RevokeInvitation {
        by: member.actor(),
        invitation_id,
    };
    let committed = state
        .tenants
        .execute(tenant_id, command.into(), &member.metadata(&info))
        .await?;
    state.settle(committed).await;
    Ok(StatusCode::NO_CONTENT)
}

/// Accept an invitation with its token: creates the member and its API key.
#[utoipa::path(post, path = "/v1/invitations/accept", tag = "invitations", request_body = AcceptInvitation,
    responses((status = 201, body = AcceptedInvitation), (status = 404, body = crate::error::Problem),
              (status = 410, body = crate::error::Problem)))]
pub async fn accept_invitation(
    State(state): State<AppState>,
    info: RequestInfo,
    ClientAddress(address): ClientAddress,
    ApiJson(body): ApiJson<AcceptInvitation>,
) -> ApiResult<impl IntoResponse> {
    crate::rate_limit::invitation_accept(&state, address).await?;
    let (tenant_id, invitation_id) = TenantService::invitation_of(&body.token)
        .ok_or_else(|| ApiError::validation("token", "is not an invitation token"))?;
    let member_id: MemberId = fresh_id("member");
    let metadata = anonymous_metadata(tenant_id, &format!("member:{member_id}"), &info);
    let joined = match state
        .tenants
        .accept(tenant_id, invitation_id, member_id, &body.token, &metadata)
        .await
    {
        Err(CommandError::Tenant(TenantError::NotFound)) => {
            return Err(ApiError::NotFound("invitation".into()));
        }
        other => other?,
    };
    // The key is shown once: the answer never depends on the read models.
    state.settle(joined.committed).await;
    Ok((
        StatusCode::CREATED,
        Json(AcceptedInvitation {
            tenant_id: tenant_id.into(),
            member_id: member_id.into(),
            role: joined.role.as_str().into(),
            api_key: joined.api_key,
            api_key_id: joined.api_key_id.into(),
        }),
    ))
}
