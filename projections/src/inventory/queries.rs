//! Reading the inventory read model.

use chrono::{DateTime, Utc};
use coverwatch_domain::ids::{RunId, TenantId};
use serde_json::Value;
use sqlx::PgPool;
use sqlx::types::Json;

/// One thing a scan found, as the inventory holds it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ObservationRow {
    pub service: String,
    pub region: String,
    pub kind: String,
    pub resource_id: String,
    pub enabled: bool,
    pub detail: Json<Value>,
    pub first_seen_at: DateTime<Utc>,
    pub last_changed_at: DateTime<Utc>,
}

/// An account's inventory header.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct InventoryAccountRow {
    pub regions: Vec<String>,
    pub last_run_id: RunId,
    pub last_changed_at: DateTime<Utc>,
}

pub async fn account(
    pool: &PgPool,
    tenant_id: TenantId,
    account_id: &str,
) -> sqlx::Result<Option<InventoryAccountRow>> {
    sqlx::query_as(
        "SELECT regions, last_run_id, last_changed_at FROM inventory_accounts WHERE tenant_id = $1 AND account_id = $2",
    )
    .bind(tenant_id)
    .bind(account_id)
    .fetch_optional(pool)
    .await
}

/// Everything the account's scans found, by service, region and kind.
pub async fn observations(pool: &PgPool, tenant_id: TenantId, account_id: &str) -> sqlx::Result<Vec<ObservationRow>> {
    sqlx::query_as(
        "SELECT service, region, kind, resource_id, enabled, detail, first_seen_at, last_changed_at
           FROM inventory_observations WHERE tenant_id = $1 AND account_id = $2
          ORDER BY service, region, kind, resource_id",
    )
    .bind(tenant_id)
    .bind(account_id)
    .fetch_all(pool)
    .await
}
