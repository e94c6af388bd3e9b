//! How the audit trail is read: newest first a page at a time with filters,
//! oldest first as a stream (exports hold one row at a time), and counts of
//! an action in a period (usage).

use chrono::{DateTime, Utc};
use coverwatch_domain::ids::TenantId;
use futures::stream::BoxStream;
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

/// One entry of the trail, as read (the tenant is the query's).
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct AuditRow {
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
    pub causation_id: String,
    pub client_ip: Option<String>,
    pub user_agent: Option<String>,
    pub impersonated_by: Option<String>,
    pub summary: String,
}

const COLUMNS: &str = "position, event_id, recorded_at, actor, action, resource_type, resource_id, request_id, \
    correlation_id, causation_id, client_ip, user_agent, impersonated_by, summary";

/// What a page of the trail is filtered by (each `None` is no filter).
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub actor: Option<String>,
    pub action: Option<String>,
    pub resource_type: Option<String>,
    pub resource_id: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
}

/// Newest first, strictly before position `before`.
pub async fn page(
    pool: &PgPool,
    tenant_id: TenantId,
    filter: &AuditFilter,
    before: Option<i64>,
    limit: i64,
) -> sqlx::Result<Vec<AuditRow>> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM audit_log
          WHERE tenant_id = $1
            AND ($2::text IS NULL OR actor = $2)
            AND ($3::text IS NULL OR action = $3)
            AND ($4::text IS NULL OR resource_type = $4)
            AND ($5::text IS NULL OR resource_id = $5)
            AND ($6::timestamptz IS NULL OR recorded_at >= $6)
            AND ($7::timestamptz IS NULL OR recorded_at < $7)
            AND ($8::bigint IS NULL OR position < $8)
          ORDER BY position DESC LIMIT $9"
    ))
    .bind(tenant_id)
    .bind(&filter.actor)
    .bind(&filter.action)
    .bind(&filter.resource_type)
    .bind(&filter.resource_id)
    .bind(filter.from)
    .bind(filter.to)
    .bind(before)
    .bind(limit)
    .fetch_all(pool)
    .await
}

const EXPORT: &str = "SELECT position, event_id, recorded_at, actor, action, resource_type, resource_id, request_id, \
    correlation_id, causation_id, client_ip, user_agent, impersonated_by, summary
       FROM audit_log
      WHERE tenant_id = $1 AND ($2::timestamptz IS NULL OR recorded_at >= $2)
        AND ($3::timestamptz IS NULL OR recorded_at < $3)
      ORDER BY position";

/// The whole trail in a time range, oldest first, one row at a time.
pub fn export(
    pool: &PgPool,
    tenant_id: TenantId,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
) -> BoxStream<'_, sqlx::Result<AuditRow>> {
    sqlx::query_as::<_, AuditRow>(EXPORT)
        .bind(tenant_id)
        .bind(from)
        .bind(to)
        .fetch(pool)
}

/// How many events of one type the tenant recorded in `[from, to)`.
pub async fn count_action(
    pool: &PgPool,
    tenant_id: TenantId,
    action: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "SELECT count(*) FROM audit_log
          WHERE tenant_id = $1 AND action = $2 AND recorded_at >= $3 AND recorded_at < $4",
    )
    .bind(tenant_id)
    .bind(action)
    .bind(from)
    .bind(to)
    .fetch_one(pool)
    .await
}
