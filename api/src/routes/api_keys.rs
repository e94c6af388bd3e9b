//! API keys: every member can create and revoke its own; owners and admins
//! see and revoke everyone's. Keys are shown once and stored hashed.

use super::{Page, limit, page, uuid_cursor};
use crate::auth::{Principal, RequestInfo};
use crate::error::ApiResult;
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::routes::Fields;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use coverwatch_domain::ids::{ApiKeyId, MemberId, TenantId};
use coverwatch_domain::tenant::TenantCommand;
use coverwatch_domain::values::Name;
use coverwatch_projections::directory::{ApiKeyRow, queries};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKey {
    /// A label for the key (default "default").
    pub name: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedApiKey {
    pub id: Uuid,
    pub name: String,
    pub prefix: String,
    pub member_id: Uuid,
    /// Shown once: only its hash is stored.
    pub api_key: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyView {
    pub id: Uuid,
    pub name: String,
    pub prefix: String,
    pub member_id: Uuid,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl From<ApiKeyRow> for ApiKeyView {
    fn from(row: ApiKeyRow) -> Self {
        Self {
            id: row.id.into(),
            name: row.name,
            prefix: row.prefix,
            member_id: row.member_id.into(),
            created_at: row.created_at,
            revoked_at: row.revoked_at,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyQuery {
    pub cursor: Option<String>,
    pub limit: Option<i64>,
}

/// Create an API key for the calling member.
#[utoipa::path(post, path = "/v1/tenants/{tenant_id}/api-keys", tag = "api-keys",
    params(("tenant_id" = Uuid, Path)), request_body = CreateApiKey, security(("api_key" = [])),
    responses((status = 201, body = CreatedApiKey)))]
pub async fn create_api_key(
    State(state): State<AppState>,
    principal: Principal,
    info: RequestInfo,
    headers: HeaderMap,
    ApiPath(tenant_id): ApiPath<TenantId>,
    ApiJson(body): ApiJson<CreateApiKey>,
) -> ApiResult<impl IntoResponse> {
    let member = principal.in_tenant(tenant_id, &state, &headers).await?;
    let mut fields = Fields::default();
    let name = fields.check("name", Name::parse(body.name.as_deref().unwrap_or("default")));
    fields.finish()?;
    let created = state
        .tenants
        .create_api_key(tenant_id, member.actor(), name.unwrap(), &member.metadata(&info))
        .await?;
    state.settle(created.committed).await;
    Ok((
        StatusCode::CREATED,
        Json(CreatedApiKey {
            id: created.key.key_id.into(),
            name: created.key.name.into(),
            prefix: created.key.prefix,
            member_id: member.member_id.into(),
            api_key: created.plaintext,
        }),
    ))
}

/// API keys: all of the tenant's for owners and admins, else the caller's own.
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/api-keys", tag = "api-keys",
    params(("tenant_id" = Uuid, Path), ApiKeyQuery), security(("api_key" = [])),
    responses((status = 200, body = Page<ApiKeyView>)))]
pub async fn list_api_keys(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    ApiPath(tenant_id): ApiPath<TenantId>,
    ApiQuery(query): ApiQuery<ApiKeyQuery>,
) -> ApiResult<impl IntoResponse> {
    let member = principal.in_tenant(tenant_id, &state, &headers).await?;
    let only_member: Option<MemberId> = (!member.role.can_administer()).then_some(member.member_id);
    let limit = limit(query.limit)?;
    let after: Option<ApiKeyId> = uuid_cursor(query.cursor.as_deref())?;
    let rows = queries::api_keys_page(&state.pool, tenant_id, only_member, after, limit + 1).await?;
    let (rows, next_cursor) = page(rows, limit, |k| k.id.to_string());
    Ok(Json(Page {
        items: rows.into_iter().map(ApiKeyView::from).collect(),
        next_cursor,
    }))
}

/// Revoke a key: own keys by anyone, others' by owners and admins.
#[utoipa::path(delete, path = "/v1/tenants/{tenant_id}/api-keys/{key_id}", tag = "api-keys",
    params(("tenant_id" = Uuid, Path), ("key_id" = Uuid, Path)), security(("api_key" = [])),
    responses((status = 204), (status = 404, body = crate::error::Problem)))]
pub async fn revoke_api_key(
    State(state): State<AppState>,
    principal: Principal,
    info: RequestInfo,
    headers: HeaderMap,
    ApiPath((tenant_id, key_id)): ApiPath<(TenantId, ApiKeyId)>,
) -> ApiResult<StatusCode> {
    let member = principal.in_tenant(tenant_id, &state, &headers).await?;
    let command = TenantCommand::RevokeApiKey {
        by: member.actor(),
        key_id,
    };
    let committed = state
        .tenants
        .execute(tenant_id, command.into(), &member.metadata(&info))
        .await?;
    state.settle(committed).await;
    Ok(StatusCode::NO_CONTENT)
}
