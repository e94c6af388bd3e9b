//! Coverage history upkeep, run with the periodic settling: a daily snapshot
//! of every account and organization whose last daily one is a day old, and
//! pruning of snapshots older than each tenant's history retention (from its
//! tier). Pruning is a projection concern: the event log is never pruned.

use anyhow::Context;
use chrono::{DateTime, Duration, Utc};
use coverwatch_commands::billing::Billing;

pub async fn maintain(billing: &Billing, now: DateTime<Utc>) -> anyhow::Result<()> {
    let pool = &billing.pool;
    let day_ago = now - Duration::days(1);
    let version = &coverwatch_domain::attack::latest().attack_version;
    sqlx::query(
        "INSERT INTO coverage_daily_snapshots (tenant_id, scope, scope_id, kind, position, taken_at, attack_version, figures)
         SELECT c.tenant_id, 'account', c.account_id, 'daily', c.position, $1, $3, c.figures FROM coverage_accounts c
          WHERE c.figures IS NOT NULL AND NOT EXISTS (
                SELECT 1 FROM coverage_daily_snapshots s WHERE s.tenant_id = c.tenant_id AND s.scope = 'account'
                   AND s.scope_id = c.account_id AND s.taken_at > $2)
         ON CONFLICT DO NOTHING",
    )
    .bind(now)
    .bind(day_ago)
    .bind(version)
    .execute(pool)
    .await
    .context("daily account snapshots")?;
    sqlx::query(
        "INSERT INTO coverage_daily_snapshots (tenant_id, scope, scope_id, kind, position, taken_at, attack_version, figures)
         SELECT o.tenant_id, 'organization', o.organization_id::text, 'daily',
                coalesce((SELECT position FROM subscriber_checkpoints WHERE name = 'coverage'), 0), $1, $3, o.figures
           FROM coverage_orgs o
          WHERE o.figures IS NOT NULL AND NOT EXISTS (
                SELECT 1 FROM coverage_daily_snapshots s WHERE s.tenant_id = o.tenant_id AND s.scope = 'organization'
                   AND s.scope_id = o.organization_id::text AND s.taken_at > $2)
         ON CONFLICT DO NOTHING",
    )
    .bind(now)
    .bind(day_ago)
    .bind(version)
    .execute(pool)
    .await
    .context("daily organization snapshots")?;
    let tenants: Vec<uuid::Uuid> = sqlx::query_scalar(
        "SELECT tenant_id FROM coverage_snapshots UNION SELECT tenant_id FROM coverage_daily_snapshots",
    )
    .fetch_all(pool)
    .await?;
    for tenant_id in tenants {
        let days = billing.entitlements(tenant_id).await?.history_retention_days;
        for table in ["coverage_snapshots", "coverage_daily_snapshots"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE tenant_id = $1 AND taken_at < $2"))
                .bind(tenant_id)
                .bind(now - Duration::days(i64::from(days)))
                .execute(pool)
                .await
                .context("pruning coverage snapshots")?;
        }
    }
    Ok(())
}
