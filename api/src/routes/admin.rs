//! Platform admin: list tenants, suspend and reactivate them
//! (`Authorization: Bearer $COVERWATCH_ADMIN_TOKEN`).

use super::tenants::{TENANT_COLUMNS, TenantView, admin_command, platform_admin};
use super::{Page, limit, page, uuid_cursor};
use crate::auth::{Principal, RequestInfo};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use coverwatch_domain::tenant::TenantCommand;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct TenantQuery {
    /// active, suspended or deleted.
    pub status: Option<String>,
    pub cursor: Option<String>,
    pub limit: Option<i64>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SuspendTenant {
    pub reason: String,
}

/// All tenants, oldest first.
#[utoipa::path(get, path = "/v1/admin/tenants", tag = "admin", params(TenantQuery),
    security(("admin_token" = [])), responses((status = 200, body = Page<TenantView>)))]
pub async fn list_tenants(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(query): ApiQuery<TenantQuery>,
) -> ApiResult<Json<Page<TenantView>>> {
    principal.require_admin()?;
    let limit = limit(query.limit)?;
    if let Some(status) = &query.status
        && !["active", "suspended", "deleted"].contains(&status.as_str())
    {
        return Err(ApiError::validation("status", "must be active, suspended or deleted"));
    }
    let rows: Vec<TenantView> = sqlx::query_as(&format!(
        "SELECT {TENANT_COLUMNS} FROM tenants
          WHERE ($1::text IS NULL OR status = $1) AND ($2::uuid IS NULL OR id > $2)
          ORDER BY id LIMIT $3"
    ))
    .bind(&query.status)
    .bind(uuid_cursor(query.cursor.as_deref())?)
    .bind(limit + 1)
    .fetch_all(&state.pool)
    .await?;
    let (items, next_cursor) = page(rows, limit, |t| t.id.to_string());
    Ok(Json(Page { items, next_cursor }))
}

/// Suspend a tenant: its members can read but not write.
#[utoipa::path(post, path = "/v1/admin/tenants/{tenant_id}/suspend", tag = "admin",
    params(("tenant_id" = Uuid, Path)), request_body = SuspendTenant, security(("admin_token" = [])),
    responses((status = 200, body = TenantView)))]
pub async fn suspend_tenant(
    State(state): State<AppState>,
    principal: Principal,
    info: RequestInfo,
    ApiPath(tenant_id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<SuspendTenant>,
) -> ApiResult<Json<TenantView>> {
    principal.require_admin()?;
    let command = TenantCommand::Suspend {
        by: platform_admin(),
        reason: body.reason,
    };
    Ok(Json(admin_command(&state, &info, tenant_id, command).await?))
}

/// Lift a tenant's suspension.
#[utoipa::path(post, path = "/v1/admin/tenants/{tenant_id}/reactivate", tag = "admin",
    params(("tenant_id" = Uuid, Path)), security(("admin_token" = [])),
    responses((status = 200, body = TenantView)))]
pub async fn reactivate_tenant(
    State(state): State<AppState>,
    principal: Principal,
    info: RequestInfo,
    ApiPath(tenant_id): ApiPath<Uuid>,
) -> ApiResult<Json<TenantView>> {
    principal.require_admin()?;
    let command = TenantCommand::Reactivate { by: platform_admin() };
    Ok(Json(admin_command(&state, &info, tenant_id, command).await?))
}
