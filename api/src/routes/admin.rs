//! Platform admin: list tenants, suspend and reactivate them
//! (`Authorization: Bearer $COVERWATCH_ADMIN_TOKEN`).

use super::tenants::{TenantView, admin_command, platform_admin};
use super::{Page, limit, page, uuid_cursor};
use crate::auth::{Principal, RequestInfo};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use coverwatch_domain::ids::TenantId;
use coverwatch_domain::tenant::TenantCommand;
use coverwatch_projections::directory::queries;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

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
    let after = uuid_cursor(query.cursor.as_deref())?;
    let rows = queries::tenants_page(&state.pool, query.status.as_deref(), after, limit + 1).await?;
    let (rows, next_cursor) = page(rows, limit, |t| t.id.to_string());
    Ok(Json(Page {
        items: rows.into_iter().map(TenantView::from).collect(),
        next_cursor,
    }))
}

/// Suspend a tenant: its members can read but not write.
#[utoipa::path(post, path = "/v1/admin/tenants/{tenant_id}/suspend", tag = "admin",
    params(("tenant_id" = Uuid, Path)), request_body = SuspendTenant, security(("admin_token" = [])),
    responses((status = 200, body = TenantView)))]
pub async fn suspend_tenant(
    State(state): State<AppState>,
    principal: Principal,
    info: RequestInfo,
    ApiPath(tenant_id): ApiPath<TenantId>,
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
    ApiPath(tenant_id): ApiPath<TenantId>,
) -> ApiResult<Json<TenantView>> {
    principal.require_admin()?;
    let command = TenantCommand::Reactivate { by: platform_admin() };
    Ok(Json(admin_command(&state, &info, tenant_id, command).await?))
}
