//! The audit trail of a tenant, newest first (owner, admin and auditor).

use super::{Page, limit, page};
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiPath, ApiQuery};
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use coverwatch_domain::ids::TenantId;
use coverwatch_domain::values::Role;
use coverwatch_projections::audit::AuditRow;
use coverwatch_projections::audit::queries::{self, AuditFilter};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEntry {
    /// Global position of the event in the log.
    pub position: i64,
    pub event_id: Uuid,
    pub recorded_at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub resource_type: String,
    pub resource_id: String,
    pub request_id: String,
    pub correlation_id: String,
    pub client_ip: Option<String>,
    pub user_agent: Option<String>,
    pub impersonated_by: Option<String>,
    pub summary: String,
}

impl From<AuditRow> for AuditEntry {
    fn from(row: AuditRow) -> Self {
        Self {
            position: row.position,
            event_id: row.event_id,
            recorded_at: row.recorded_at,
            actor: row.actor,
            action: row.action,
            resource_type: row.resource_type,
            resource_id: row.resource_id,
            request_id: row.request_id,
            correlation_id: row.correlation_id,
            client_ip: row.client_ip,
            user_agent: row.user_agent,
            impersonated_by: row.impersonated_by,
            summary: row.summary,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Exact actor, e.g. `member:<id>` or `platform-admin`.
    pub actor: Option<String>,
    /// Event type, e.g. `MemberInvited`.
    pub action: Option<String>,
    /// `type/id` (e.g. `tenant/<id>`) or just a type.
    pub resource: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub cursor: Option<String>,
    pub limit: Option<i64>,
}

/// Who did what and when, filtered and cursor-paginated.
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/audit-log", tag = "audit",
    params(("tenant_id" = Uuid, Path), AuditQuery), security(("api_key" = [])),
    responses((status = 200, body = Page<AuditEntry>), (status = 403, body = crate::error::Problem)))]
pub async fn audit_log(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    ApiPath(tenant_id): ApiPath<TenantId>,
    ApiQuery(query): ApiQuery<AuditQuery>,
) -> ApiResult<impl IntoResponse> {
    let member = principal.in_tenant(tenant_id, &state, &headers).await?;
    member.require(
        Role::can_read_audit,
        "only an owner, admin or auditor reads the audit log",
    )?;
    let limit = limit(query.limit)?;
    let cursor: Option<i64> = query
        .cursor
        .as_deref()
        .map(|c| {
            c.parse()
                .map_err(|_| ApiError::validation("cursor", "is not a cursor this API returned"))
        })
        .transpose()?;
    let (resource_type, resource_id) = match query.resource.as_deref() {
        None => (None, None),
        Some(r) => match r.split_once('/') {
            Some((t, id)) => (Some(t.to_owned()), Some(id.to_owned())),
            None => (Some(r.to_owned()), None),
        },
    };
    let filter = AuditFilter {
        actor: query.actor,
        action: query.action,
        resource_type,
        resource_id,
        from: query.from,
        to: query.to,
    };
    let rows = queries::page(&state.pool, tenant_id, &filter, cursor, limit + 1).await?;
    let (rows, next_cursor) = page(rows, limit, |e| e.position.to_string());
    Ok(Json(Page {
        items: rows.into_iter().map(AuditEntry::from).collect(),
        next_cursor,
    }))
}
