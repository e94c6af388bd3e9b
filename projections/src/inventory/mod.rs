//! The inventory read model: what each connected account's scans found,
//! per service and region (`inventory_observations`), and per account the
//! regions in scope and the last change (`inventory_accounts`), from the
//! AccountInventory aggregate's events. `queries` reads them. When the
//! account was last scanned (a scan that changed nothing appends nothing)
//! is the scan workflow's to say, from its run rows.

pub mod queries;

use crate::event::StoredEvent;
use crate::runtime::Subscriber;
use async_trait::async_trait;
use coverwatch_domain::scan::inventory::InventoryEvent;
use coverwatch_domain::scan::{Observation, ObservationKey};
use serde_json::Value;
use sqlx::PgConnection;

pub struct Inventory;

#[async_trait]
impl Subscriber for Inventory {
    fn name(&self) -> &'static str {
        "inventory"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["inventory_observations", "inventory_accounts"]
    }

    /// The inventory is read right after a scan is started or finishes
    /// (scans do not wait, but their readers do).
    fn awaited(&self) -> bool {
        true
    }

    async fn handle(&self, conn: &mut PgConnection, events: &[StoredEvent]) -> anyhow::Result<()> {
        for event in events.iter().filter(|e| e.aggregate_type == "account_inventory") {
            let InventoryEvent::InventoryChanged {
                tenant_id,
                account_id,
                run_id,
                regions,
                found,
                changed,
                removed,
            } = event.decode()?;
            let account = account_id.as_str();
            remove(conn, tenant_id, account, &removed).await?;
            upsert(
                conn,
                tenant_id,
                account,
                found.iter().chain(&changed),
                event.recorded_at,
            )
            .await?;
            let regions: Vec<&str> = regions.iter().map(|r| r.as_str()).collect();
            sqlx::query(
                "INSERT INTO inventory_accounts (tenant_id, account_id, regions, last_run_id, last_changed_at)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (tenant_id, account_id) DO UPDATE SET regions = excluded.regions,
                    last_run_id = excluded.last_run_id, last_changed_at = excluded.last_changed_at",
            )
            .bind(tenant_id)
            .bind(account)
            .bind(&regions)
            .bind(run_id)
            .bind(event.recorded_at)
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    }
}

async fn remove(
    conn: &mut PgConnection,
    tenant_id: coverwatch_domain::ids::TenantId,
    account: &str,
    removed: &[ObservationKey],
) -> anyhow::Result<()> {
    if removed.is_empty() {
        return Ok(());
    }
    let (services, regions, kinds, resources) = key_columns(
        removed
            .iter()
            .map(|k| (k.service, &k.region, k.kind.as_str(), k.resource_id.as_str())),
    );
    sqlx::query(
        "DELETE FROM inventory_observations o
          USING unnest($3::text[], $4::text[], $5::text[], $6::text[]) AS r(service, region, kind, resource_id)
          WHERE o.tenant_id = $1 AND o.account_id = $2 AND o.service = r.service AND o.region = r.region
            AND o.kind = r.kind AND o.resource_id = r.resource_id",
    )
    .bind(tenant_id)
    .bind(account)
    .bind(&services)
    .bind(&regions)
    .bind(&kinds)
    .bind(&resources)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn upsert<'a>(
    conn: &mut PgConnection,
    tenant_id: coverwatch_domain::ids::TenantId,
    account: &str,
    observations: impl Iterator<Item = &'a Observation>,
    at: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<()> {
    let observations: Vec<&Observation> = observations.collect();
    if observations.is_empty() {
        return Ok(());
    }
    let (services, regions, kinds, resources) = key_columns(
        observations
            .iter()
            .map(|o| (o.service, &o.region, o.kind.as_str(), o.resource_id.as_str())),
    );
    let enabled: Vec<bool> = observations.iter().map(|o| o.enabled).collect();
    let details: Vec<Value> = observations
        .iter()
        .map(|o| serde_json::to_value(&o.detail))
        .collect::<Result<_, _>>()?;
    sqlx::query(
        "INSERT INTO inventory_observations (tenant_id, account_id, service, region, kind, resource_id, enabled,
                detail, first_seen_at, last_changed_at)
         SELECT $1, $2, u.service, u.region, u.kind, u.resource_id, u.enabled, u.detail, $9, $9
           FROM unnest($3::text[], $4::text[], $5::text[], $6::text[], $7::bool[], $8::jsonb[])
                AS u(service, region, kind, resource_id, enabled, detail)
         ON CONFLICT (tenant_id, account_id, service, region, kind, resource_id) DO UPDATE SET
            enabled = excluded.enabled, detail = excluded.detail, last_changed_at = excluded.last_changed_at",
    )
    .bind(tenant_id)
    .bind(account)
    .bind(&services)
    .bind(&regions)
    .bind(&kinds)
    .bind(&resources)
    .bind(&enabled)
    .bind(&details)
    .bind(at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Service, region, kind and resource id of observations or their keys,
/// one column each (bound as arrays for `unnest`): shared with the
/// coverage read model's scan tables.
pub(crate) type KeyColumns<'a> = (Vec<&'a str>, Vec<&'a str>, Vec<&'a str>, Vec<&'a str>);

pub(crate) fn key_columns<'a>(
    keys: impl Iterator<
        Item = (
            coverwatch_domain::scan::Service,
            &'a coverwatch_domain::cloud::values::Region,
            &'a str,
            &'a str,
        ),
    >,
) -> KeyColumns<'a> {
    let mut columns: KeyColumns<'a> = Default::default();
    for (service, region, kind, resource) in keys {
        columns.0.push(service.as_str());
        columns.1.push(region.as_str());
        columns.2.push(kind);
        columns.3.push(resource);
    }
    columns
}
