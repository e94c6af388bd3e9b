//! What scans found, in coverage: per account, the observations the
//! AccountInventory events report (what is enabled where), the region
//! rule's evaluation (`coverwatch_domain::scan::coverage`: which detections
//! cover the account, which services are off where) and the techniques
//! they cover, which join the account's own detections. One event per
//! account scan: its difference is written in bulk and the account is
//! evaluated once, however many findings it carries.

use super::Sides;
use super::batch::Batch;
use super::figures::refresh;
use crate::event::StoredEvent;
use crate::inventory::key_columns;
use coverwatch_domain::attack;
use coverwatch_domain::cloud::values::Region;
use coverwatch_domain::ids::TenantId;
use coverwatch_domain::scan::coverage::evaluate;
use coverwatch_domain::scan::inventory::InventoryEvent;
use coverwatch_domain::scan::{Observation, Service};
use sqlx::PgConnection;
use std::collections::BTreeSet;

pub(super) async fn inventory(
    conn: &mut PgConnection,
    batch: &mut Batch,
    event: &StoredEvent,
    decoded: InventoryEvent,
) -> anyhow::Result<()> {
    let InventoryEvent::InventoryChanged {
        tenant_id,
        account_id,
        regions,
        found,
        changed,
        removed,
        ..
    } = decoded;
    let account = account_id.as_str();
    if !removed.is_empty() {
        let columns = key_columns(
            removed
                .iter()
                .map(|k| (k.service, &k.region, k.kind.as_str(), k.resource_id.as_str())),
        );
        sqlx::query(
            "DELETE FROM coverage_scan_observations o
              USING unnest($3::text[], $4::text[], $5::text[], $6::text[]) AS r(service, region, kind, resource_id)
              WHERE o.tenant_id = $1 AND o.account_id = $2 AND o.service = r.service AND o.region = r.region
                AND o.kind = r.kind AND o.resource_id = r.resource_id",
        )
        .bind(tenant_id)
        .bind(account)
        .bind(&columns.0)
        .bind(&columns.1)
        .bind(&columns.2)
        .bind(&columns.3)
        .execute(&mut *conn)
        .await?;
    }
    let upserts: Vec<&Observation> = found.iter().chain(&changed).collect();
    if !upserts.is_empty() {
        let columns = key_columns(
            upserts
                .iter()
                .map(|o| (o.service, &o.region, o.kind.as_str(), o.resource_id.as_str())),
        );
        let enabled: Vec<bool> = upserts.iter().map(|o| o.enabled).collect();
        sqlx::query(
            "INSERT INTO coverage_scan_observations (tenant_id, account_id, service, region, kind, resource_id, enabled)
             SELECT $1, $2, u.service, u.region, u.kind, u.resource_id, u.enabled
               FROM unnest($3::text[], $4::text[], $5::text[], $6::text[], $7::bool[])
                    AS u(service, region, kind, resource_id, enabled)
             ON CONFLICT (tenant_id, account_id, service, region, kind, resource_id) DO UPDATE SET enabled = excluded.enabled",
        )
        .bind(tenant_id)
        .bind(account)
        .bind(&columns.0)
        .bind(&columns.1)
        .bind(&columns.2)
        .bind(&columns.3)
        .bind(&enabled)
        .execute(&mut *conn)
        .await?;
    }
    evaluate_account(conn, tenant_id, account, &regions, event.position).await?;
    refresh(
        conn,
        batch,
        event,
        tenant_id,
        vec![account.to_owned()],
        Sides {
            own: true,
            inherited: false,
        },
    )
    .await
}

/// The region rule over the account's observations: its evaluation and the
/// techniques it covers, stored for `refresh` and the queries.
async fn evaluate_account(
    conn: &mut PgConnection,
    tenant_id: TenantId,
    account: &str,
    regions: &BTreeSet<Region>,
    position: i64,
) -> anyhow::Result<()> {
    let rows: Vec<(String, String, String, String, bool)> = sqlx::query_as(
        "SELECT service, region, kind, resource_id, enabled FROM coverage_scan_observations
          WHERE tenant_id = $1 AND account_id = $2 AND enabled",
    )
    .bind(tenant_id)
    .bind(account)
    .fetch_all(&mut *conn)
    .await?;
    let observations: Vec<Observation> = rows
        .into_iter()
        .filter_map(|(service, region, kind, resource_id, enabled)| {
            Some(Observation {
                service: Service::parse(&service)?,
                region: Region::parse(&region).ok()?,
                kind,
                resource_id,
                enabled,
                detail: Default::default(),
            })
        })
        .collect();
    let evaluation = evaluate(&observations, regions);
    let catalog = attack::latest();
    let scanned = catalog.set_of(evaluation.covered().iter());
    let regions: Vec<&str> = regions.iter().map(|r| r.as_str()).collect();
    sqlx::query(
        "INSERT INTO coverage_scan_accounts (tenant_id, account_id, regions, scanned, evaluation, position)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (tenant_id, account_id) DO UPDATE SET regions = excluded.regions, scanned = excluded.scanned,
            evaluation = excluded.evaluation, position = excluded.position",
    )
    .bind(tenant_id)
    .bind(account)
    .bind(&regions)
    .bind(scanned.to_bytes())
    .bind(serde_json::to_value(&evaluation)?)
    .bind(position)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
