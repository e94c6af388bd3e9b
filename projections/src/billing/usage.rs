//! Usage against the plan: the report (seats, connected accounts, API
//! requests, discovery runs and detections in the current billing period,
//! with the thresholds recorded in the log), composed from the read models
//! that own each count, and the API request meter.
//!
//! `api_requests` is the one usage table not fed from the log: the API edge
//! writes one row per metered request (`record_request`), and the upkeep
//! schedule prunes it past the longest period reported (`prune_requests`).

use super::queries::subscription;
use crate::{audit, cloud, coverage};
use chrono::{DateTime, Utc};
use coverwatch_domain::ids::TenantId;
use coverwatch_domain::plans::{Limit, PlanCatalog};
use serde::Serialize;
use sqlx::PgPool;
use std::collections::BTreeMap;
use uuid::Uuid;

#[derive(Debug, Clone, Serialize)]
pub struct MetricUsage {
    pub used: u64,
    /// `None` when unlimited.
    pub limit: Option<u64>,
    /// `None` when unlimited.
    pub percent: Option<f64>,
    /// Thresholds (80, 100) crossed in this period, as recorded in the log.
    pub thresholds_crossed: Vec<u8>,
}

#[derive(Debug, Clone, Serialize)]
pub struct UsageReport {
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    pub tier: String,
    pub metrics: BTreeMap<String, MetricUsage>,
}

fn metric(used: u64, limit: Limit, crossed: Vec<u8>) -> MetricUsage {
    let limit = limit.value();
    MetricUsage {
        used,
        limit,
        percent: limit.map(|l| {
            if l == 0 {
                100.0
            } else {
                (used as f64 * 1000.0 / l as f64).round() / 10.0
            }
        }),
        thresholds_crossed: crossed,
    }
}

/// Meters one authenticated request under the id the server gave it (so a
/// client cannot choose what counts); the client's `X-Request-Id`, if any,
/// is kept for correlation.
pub async fn record_request(
    pool: &PgPool,
    tenant_id: TenantId,
    server_request_id: Uuid,
    client_request_id: Option<&str>,
    at: DateTime<Utc>,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO api_requests (tenant_id, request_id, client_request_id, at) VALUES ($1, $2, $3, $4)
         ON CONFLICT DO NOTHING",
    )
    .bind(tenant_id)
    .bind(server_request_id.to_string())
    .bind(client_request_id)
    .bind(at)
    .execute(pool)
    .await
    .map(drop)
}

/// The longest period usage is reported over: an annual plan's year (and
/// some slack for a period that started late).
pub const REQUEST_RETENTION_DAYS: i64 = 400;

/// Forgets metered requests older than any period the report serves.
pub async fn prune_requests(pool: &PgPool, now: DateTime<Utc>) -> sqlx::Result<u64> {
    let result = sqlx::query("DELETE FROM api_requests WHERE at < $1")
        .bind(now - chrono::Duration::days(REQUEST_RETENTION_DAYS))
        .execute(pool)
        .await?;
    Ok(result.rows_affected())
}

/// Members and unexpired pending invitations at `now`.
pub async fn seats_in_use(pool: &PgPool, tenant_id: TenantId, now: DateTime<Utc>) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "SELECT count(*) FROM usage_seats
          WHERE tenant_id = $1 AND (kind = 'member' OR expires_at > $2)",
    )
    .bind(tenant_id)
    .bind(now)
    .fetch_one(pool)
    .await
}

async fn requests(pool: &PgPool, tenant_id: TenantId, from: DateTime<Utc>, to: DateTime<Utc>) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT count(*) FROM api_requests WHERE tenant_id = $1 AND at >= $2 AND at < $3")
        .bind(tenant_id)
        .bind(from)
        .bind(to)
        .fetch_one(pool)
        .await
}

/// (metric, threshold) recorded for the period starting at `period_start`.
async fn thresholds(
    pool: &PgPool,
    tenant_id: TenantId,
    period_start: DateTime<Utc>,
) -> sqlx::Result<Vec<(String, i16)>> {
    sqlx::query_as(
        "SELECT metric, threshold FROM usage_thresholds
          WHERE tenant_id = $1 AND period_start = $2 ORDER BY threshold",
    )
    .bind(tenant_id)
    .bind(period_start)
    .fetch_all(pool)
    .await
}

/// The usage report of a tenant at `now`, from the read models only.
pub async fn report(
    pool: &PgPool,
    catalog: &PlanCatalog,
    tenant_id: TenantId,
    now: DateTime<Utc>,
) -> sqlx::Result<UsageReport> {
    let subscription = subscription(pool, tenant_id).await?;
    let (period_start, period_end) = subscription.usage_period(now);
    let entitlements = subscription.entitlements(now, catalog);
    let crossed = thresholds(pool, tenant_id, period_start).await?;
    let crossed_for = |name: &str| {
        crossed
            .iter()
            .filter(|(m, _)| m == name)
            .map(|(_, t)| *t as u8)
            .collect::<Vec<_>>()
    };
    let members = seats_in_use(pool, tenant_id, now).await?;
    // Only connected accounts count; disconnected ones stay listed.
    let accounts = cloud::queries::connected_accounts(pool, tenant_id).await?;
    let requests = requests(pool, tenant_id, period_start, period_end).await?;
    // Discovery runs that finished in the period, from the audit trail.
    let runs = audit::queries::count_action(pool, tenant_id, "DiscoveryCompleted", period_start, period_end).await?;
    let detections = coverage::queries::detections_in_force(pool, tenant_id).await?;
    let mut metrics = BTreeMap::new();
    metrics.insert(
        "members".to_owned(),
        metric(members as u64, entitlements.max_members, crossed_for("members")),
    );
    metrics.insert(
        "cloud_accounts".to_owned(),
        metric(
            accounts as u64,
            entitlements.max_accounts,
            crossed_for("cloud_accounts"),
        ),
    );
    metrics.insert(
        "api_requests".to_owned(),
        metric(requests as u64, Limit::Unlimited, vec![]),
    );
    metrics.insert(
        "discovery_runs".to_owned(),
        metric(runs as u64, Limit::Unlimited, vec![]),
    );
    metrics.insert(
        "detections".to_owned(),
        metric(detections as u64, Limit::Unlimited, vec![]),
    );
    Ok(UsageReport {
        period_start,
        period_end,
        tier: subscription.effective_tier(now, catalog).to_string(),
        metrics,
    })
}
