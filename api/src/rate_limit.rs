//! Per-tenant request rate limits by plan and the metering of each request
//! that reaches a tenant, at the API edge.

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use coverwatch_domain::ids::TenantId;
use coverwatch_projections::billing::{queries, usage};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Fixed one-minute windows per tenant, in this process. The limits come
/// from the plan (cached for a few seconds so a change applies quickly).
#[derive(Default)]
pub struct RateLimiter {
    windows: Mutex<HashMap<TenantId, Window>>,
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
    pub async fn admit<F, Fut>(&self, tenant_id: TenantId, limit_of: F) -> ApiResult<()>
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

/// Rate-limits and meters one authenticated request in a tenant, under an
/// id the server chose; `client_request_id` is the client's, for correlation.
pub async fn meter(state: &AppState, tenant_id: TenantId, client_request_id: Option<&str>) -> ApiResult<()> {
    if state.settings.http.rate_limits {
        state
            .rate_limiter
            .admit(tenant_id, || async {
                let subscription = queries::subscription(&state.pool, tenant_id).await?;
                Ok(subscription
                    .entitlements(state.clock.now(), &state.catalog)
                    .api_rate_per_minute)
            })
            .await?;
    }
    let server_request_id = uuid::Uuid::now_v7();
    usage::record_request(
        &state.pool,
        tenant_id,
        server_request_id,
        client_request_id,
        state.clock.now(),
    )
    .await?;
    Ok(())
}
