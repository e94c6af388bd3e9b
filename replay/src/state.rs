//! A tenant as it was at an instant: its events up to then folded with the
//! same code that folds them live (the Tenant aggregate's `apply` and the
//! directory read model's fold). API key hashes are never shown.

use chrono::{DateTime, Utc};
use coverwatch_domain::ids::{ApiKeyId, MemberId, TenantId};
use coverwatch_domain::tenant::{Tenant, TenantEvent};
use coverwatch_projections::StoredEvent;
use coverwatch_projections::directory::{InvitationRow, MemberRow, TenantRow, fold};
use coverwatch_projections::event::EVENT_COLUMNS;
use cqrs_es::Aggregate;
use serde::Serialize;
use sqlx::PgPool;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApiKeyAsOf {
    pub id: ApiKeyId,
    pub member_id: MemberId,
    pub name: String,
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TenantAsOf {
    pub as_of: DateTime<Utc>,
    /// Position of the last event folded (0: none).
    pub position: i64,
    pub events: usize,
    pub tenant: TenantRow,
    pub members: Vec<MemberRow>,
    pub invitations: Vec<InvitationRow>,
    pub api_keys: Vec<ApiKeyAsOf>,
    /// The aggregate's own state (what its decisions see), version included.
    pub aggregate: Tenant,
}

/// The tenant's events recorded at or before `as_of`, in global order.
pub async fn events_until(
    pool: &PgPool,
    aggregate_type: &str,
    aggregate_id: &str,
    as_of: DateTime<Utc>,
) -> sqlx::Result<Vec<StoredEvent>> {
    sqlx::query_as(&format!(
        "SELECT {EVENT_COLUMNS} FROM events
          WHERE aggregate_type = $1 AND aggregate_id = $2 AND recorded_at <= $3 ORDER BY position"
    ))
    .bind(aggregate_type)
    .bind(aggregate_id)
    .bind(as_of)
    .fetch_all(pool)
    .await
}

/// `None` when the tenant did not exist yet at `as_of`.
pub async fn tenant_as_of(
    pool: &PgPool,
    tenant_id: TenantId,
    as_of: DateTime<Utc>,
) -> anyhow::Result<Option<TenantAsOf>> {
    let events = events_until(pool, "tenant", &tenant_id.to_string(), as_of).await?;
    let folded = fold(&events)?;
    let Some(tenant) = folded.tenants.into_iter().next() else {
        return Ok(None);
    };
    let mut aggregate = Tenant::default();
    for event in &events {
        aggregate.apply(event.decode::<TenantEvent>()?);
    }
    Ok(Some(TenantAsOf {
        as_of,
        position: events.last().map(|e| e.position).unwrap_or(0),
        events: events.len(),
        tenant,
        members: folded.members,
        invitations: folded.invitations,
        api_keys: folded
            .api_keys
            .into_iter()
            .map(|k| ApiKeyAsOf {
                id: k.id,
                member_id: k.member_id,
                name: k.name,
                prefix: k.prefix,
                created_at: k.created_at,
                revoked_at: k.revoked_at,
            })
            .collect(),
        aggregate,
    }))
}
