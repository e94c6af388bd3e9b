//! Coverage history: snapshots of accounts and organizations, read a page at
//! a time; daily snapshots and pruning past each tenant's retention, which
//! the history upkeep workflow runs (the event log itself is never pruned).

use chrono::{DateTime, Utc};
use coverwatch_domain::ids::TenantId;
use serde_json::Value;
use sqlx::PgPool;

/// One snapshot: a change (a figure moved at `position`) or a daily one.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SnapshotRow {
    pub taken_at: DateTime<Utc>,
    /// `change` or `daily`.
    pub kind: String,
    pub position: i64,
    pub attack_version: String,
    pub figures: Value,
}

/// Where a page ends: (taken_at, position, kind), the order of the history.
pub type SnapshotKey = (DateTime<Utc>, i64, String);

/// One account's or organization's snapshots in `[from, to]`, oldest first,
/// after `after` (`scope` is `account` or `organization`).
#[expect(clippy::too_many_arguments, reason = "a query's filters, each a bind")]
pub async fn page(
    pool: &PgPool,
    tenant_id: TenantId,
    scope: &str,
    scope_id: &str,
    from: DateTime<Utc>,
    to: Option<DateTime<Utc>>,
    after: Option<SnapshotKey>,
    limit: i64,
) -> sqlx::Result<Vec<SnapshotRow>> {
    let (after_at, after_position, after_kind) = match after {
        Some((at, position, kind)) => (Some(at), Some(position), Some(kind)),
        None => (None, None, None),
    };
    sqlx::query_as(
        "SELECT taken_at, kind, position, attack_version, figures FROM (
                SELECT * FROM coverage_snapshots UNION ALL SELECT * FROM coverage_daily_snapshots) s
          WHERE tenant_id = $1 AND scope = $2 AND scope_id = $3 AND taken_at >= $4
            AND ($5::timestamptz IS NULL OR taken_at <= $5)
            AND ($6::timestamptz IS NULL OR (taken_at, position, kind) > ($6, $7, $8))
          ORDER BY taken_at, position, kind LIMIT $9",
    )
    .bind(tenant_id)
    .bind(scope)
    .bind(scope_id)
    .bind(from)
    .bind(to)
    .bind(after_at)
    .bind(after_position)
    .bind(after_kind)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// A daily snapshot of every account and organization whose last daily one
/// is a day old at `now`, labelled with `attack_version`.
pub async fn take_daily(pool: &PgPool, now: DateTime<Utc>, attack_version: &str) -> sqlx::Result<()> {
    let day_ago = now - chrono::Duration::days(1);
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
    .bind(attack_version)
    .execute(pool)
    .await?;
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
    .bind(attack_version)
    .execute(pool)
    .await?;
    Ok(())
}

/// Tenants with any coverage history.
pub async fn tenants_with_history(pool: &PgPool) -> sqlx::Result<Vec<TenantId>> {
    sqlx::query_scalar("SELECT tenant_id FROM coverage_snapshots UNION SELECT tenant_id FROM coverage_daily_snapshots")
        .fetch_all(pool)
        .await
}

/// Drops the tenant's snapshots taken before `before`.
pub async fn prune(pool: &PgPool, tenant_id: TenantId, before: DateTime<Utc>) -> sqlx::Result<()> {
    for table in ["coverage_snapshots", "coverage_daily_snapshots"] {
        sqlx::query(&format!("DELETE FROM {table} WHERE tenant_id = $1 AND taken_at < $2"))
            .bind(tenant_id)
            .bind(before)
            .execute(pool)
            .await?;
    }
    Ok(())
}
