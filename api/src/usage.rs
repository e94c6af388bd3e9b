//! Usage and limits at the API edge: per-tenant request rate limits by plan,
//! the metered request log, the usage report, and the watcher that records
//! 80 % / 100 % threshold crossings of the member limit in the log.

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use chrono::{DateTime, Utc};
use coverwatch_commands::billing::{Billing, RETRIES};
use coverwatch_commands::{CommandMetadata, TenantCommands};
use coverwatch_domain::plans::{Limit, PlanCatalog};
use coverwatch_domain::subscription::{Subscription, SubscriptionCommand};
use coverwatch_projections::billing::SeatWatcher;
use serde::Serialize;
use sqlx::PgPool;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use utoipa::ToSchema;
use uuid::Uuid;

/// The subscription as the read model holds it (FREE when it has no row yet).
pub async fn subscription_view(pool: &PgPool, tenant_id: Uuid) -> ApiResult<Subscription> {
    let row: Option<(sqlx::types::Json<Subscription>,)> =
        sqlx::query_as("SELECT state FROM subscriptions WHERE tenant_id = $1")
            .bind(tenant_id)
            .fetch_optional(pool)
            .await?;
    Ok(row.map(|(state,)| state.0).unwrap_or_default())
}

/// Fixed one-minute windows per tenant, in this process. The limits come
/// from the plan (cached for a few seconds so a change applies quickly).
#[derive(Default)]
pub struct RateLimiter {
    windows: Mutex<HashMap<Uuid, Window>>,
}

struct Window {
    started: Instant,
    count: u32,
    limit: u32,
    limit_read: Instant,
}

const WINDOW: Duration = Duration::from_secs(60);
const LIMIT_CACHE: Duration = Duration::from_secs(5);

impl RateLimiter {
    /// Counts one request; `limit_of` is asked only when the cached limit is old.
    pub async fn admit<F, Fut>(&self, tenant_id: Uuid, limit_of: F) -> ApiResult<()>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = ApiResult<u32>>,
    {
        let now = Instant::now();
        let stale = {
            let windows = self.windows.lock().expect("rate limiter lock");
            windows
                .get(&tenant_id)
                .is_none_or(|w| now.duration_since(w.limit_read) > LIMIT_CACHE)
        };
        let fresh_limit = if stale { Some(limit_of().await?) } else { None };
        let mut windows = self.windows.lock().expect("rate limiter lock");
        let window = windows.entry(tenant_id).or_insert(Window {
            started: now,
            count: 0,
            limit: fresh_limit.unwrap_or(u32::MAX),
            limit_read: now,
        });
        if let Some(limit) = fresh_limit {
            window.limit = limit;
            window.limit_read = now;
        }
        if now.duration_since(window.started) >= WINDOW {
            window.started = now;
            window.count = 0;
        }
        if window.count >= window.limit {
            let left = WINDOW.saturating_sub(now.duration_since(window.started));
            return Err(ApiError::RateLimited {
                per_minute: window.limit,
                retry_after_secs: left.as_secs().max(1),
            });
        }
        window.count += 1;
        Ok(())
    }
}

/// Rate-limits and meters one authenticated request in a tenant. The request
/// id makes the record idempotent: a retry that sends its X-Request-Id again
/// is counted once.
pub async fn meter(state: &AppState, tenant_id: Uuid, request_id: &str) -> ApiResult<()> {
    if state.settings.rate_limits {
        state
            .rate_limiter
            .admit(tenant_id, || async {
                let subscription = subscription_view(&state.pool, tenant_id).await?;
                Ok(subscription
                    .entitlements(state.clock.now(), &state.catalog)
                    .api_rate_per_minute)
            })
            .await?;
    }
    sqlx::query("INSERT INTO api_requests (tenant_id, request_id, at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
        .bind(tenant_id)
        .bind(request_id)
        .bind(state.clock.now())
        .execute(&state.pool)
        .await?;
    Ok(())
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MetricUsage {
    pub used: u64,
    /// `null` when unlimited.
    pub limit: Option<u64>,
    /// `null` when unlimited.
    pub percent: Option<f64>,
    /// Thresholds (80, 100) crossed in this period, as recorded in the log.
    pub thresholds_crossed: Vec<u8>,
}

#[derive(Debug, Serialize, ToSchema)]
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

/// The usage report of a tenant at `now`, from the read models only.
pub async fn usage_report(
    pool: &PgPool,
    catalog: &PlanCatalog,
    tenant_id: Uuid,
    now: DateTime<Utc>,
) -> ApiResult<UsageReport> {
    let subscription = subscription_view(pool, tenant_id).await?;
    let (period_start, period_end) = subscription.usage_period(now);
    let entitlements = subscription.entitlements(now, catalog);
    let members: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM usage_seats
          WHERE tenant_id = $1 AND (kind = 'member' OR expires_at > $2)",
    )
    .bind(tenant_id)
    .bind(now)
    .fetch_one(pool)
    .await?;
    let requests: i64 =
        sqlx::query_scalar("SELECT count(*) FROM api_requests WHERE tenant_id = $1 AND at >= $2 AND at < $3")
            .bind(tenant_id)
            .bind(period_start)
            .bind(period_end)
            .fetch_one(pool)
            .await?;
    let crossed: Vec<(String, i16)> = sqlx::query_as(
        "SELECT metric, threshold FROM usage_thresholds
          WHERE tenant_id = $1 AND period_start = $2 ORDER BY threshold",
    )
    .bind(tenant_id)
    .bind(period_start)
    .fetch_all(pool)
    .await?;
    let crossed_for = |name: &str| {
        crossed
            .iter()
            .filter(|(m, _)| m == name)
            .map(|(_, t)| *t as u8)
            .collect::<Vec<_>>()
    };
    let mut metrics = BTreeMap::new();
    metrics.insert(
        "members".to_owned(),
        metric(members as u64, entitlements.max_members, crossed_for("members")),
    );
    // Only connected accounts count; disconnected ones stay listed.
    let accounts: i64 =
        sqlx::query_scalar("SELECT count(*) FROM cloud_accounts WHERE tenant_id = $1 AND status = 'connected'")
            .bind(tenant_id)
            .fetch_one(pool)
            .await?;
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
    // Discovery runs that finished in the period, from the audit trail (a
    // read model of the log).
    let runs: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_log
          WHERE tenant_id = $1 AND action = 'DiscoveryCompleted' AND recorded_at >= $2 AND recorded_at < $3",
    )
    .bind(tenant_id)
    .bind(period_start)
    .bind(period_end)
    .fetch_one(pool)
    .await?;
    metrics.insert(
        "discovery_runs".to_owned(),
        metric(runs as u64, Limit::Unlimited, vec![]),
    );
    // Detections in force (enabled or disabled; retired ones no longer count).
    let detections: i64 =
        sqlx::query_scalar("SELECT count(*) FROM detections WHERE tenant_id = $1 AND status <> 'retired'")
            .bind(tenant_id)
            .fetch_one(pool)
            .await?;
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

/// Records 80 % and 100 % crossings of the member limit, once per period
/// (the Subscription aggregate refuses a second record of the same one).
pub struct ThresholdWatcher {
    pub billing: Arc<Billing>,
    pub tenants: Arc<TenantCommands>,
    pub cloud_accounts: Arc<coverwatch_commands::CloudAccountsCommands>,
}

#[async_trait::async_trait]
impl SeatWatcher for ThresholdWatcher {
    async fn seats_taken(&self, tenant_id: Uuid) -> anyhow::Result<()> {
        let now = self.billing.clock.now();
        let subscription = self.billing.load(tenant_id).await?;
        if subscription.tenant_id.is_none() {
            return Ok(());
        }
        let entitlements = subscription.entitlements(now, &self.billing.catalog);
        let (period_start, _) = subscription.usage_period(now);
        let members = self.tenants.load(tenant_id).await?.seats_used(now);
        let accounts = self.cloud_accounts.load(tenant_id).await?.connected();
        for (metric, used, limit) in [
            ("members", members, entitlements.max_members),
            ("cloud_accounts", accounts, entitlements.max_accounts),
        ] {
            let Limit::AtMost(limit) = limit else { continue };
            if limit == 0 {
                continue;
            }
            for threshold in [80u8, 100] {
                if used * 100 >= u64::from(threshold) * limit {
                    let command = SubscriptionCommand::RecordUsageThreshold {
                        metric: metric.into(),
                        threshold,
                        used,
                        limit,
                        period_start,
                    };
                    self.billing
                        .subscriptions
                        .execute_retrying(tenant_id, command, &CommandMetadata::system(tenant_id), RETRIES)
                        .await?;
                }
            }
        }
        Ok(())
    }
}
