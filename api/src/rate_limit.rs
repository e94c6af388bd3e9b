//! Rate limits at the API edge, and the metering of each request that
//! reaches a tenant.
//!
//! Every limit is a fixed window counted in PostgreSQL
//! (`coverwatch_commands::rate_limits`), so it holds however many API
//! processes serve: per tenant by its plan's `api_rate_per_minute`, and per
//! client address on anonymous sign-up, invitation acceptance and failed
//! authentication. Responses say where a client stands with the IETF
//! draft's fields (draft-ietf-httpapi-ratelimit-headers):
//! `RateLimit-Policy: "tenant";q=600;w=60` and `RateLimit: "tenant";r=599;t=42`,
//! and a refusal is 429 with `Retry-After`.

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use coverwatch_commands::rate_limits;
use coverwatch_domain::ids::TenantId;
use coverwatch_projections::billing::{queries, usage};
use std::cell::RefCell;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A limit: its name in the headers, its quota and its window.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub name: &'static str,
    pub quota: u32,
    pub window: Duration,
}

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

impl Policy {
    fn tenant(per_minute: u32) -> Self {
        Self {
            name: "tenant",
            quota: per_minute,
            window: MINUTE,
        }
    }

    fn sign_up(state: &AppState) -> Self {
        Self {
            name: "sign-up",
            quota: state.settings.http.signups_per_hour,
            window: HOUR,
        }
    }

    fn invitation_accept(state: &AppState) -> Self {
        Self {
            name: "invitation-accept",
            quota: state.settings.http.invitation_accepts_per_hour,
            window: HOUR,
        }
    }

    pub(crate) fn auth_failures(state: &AppState) -> Self {
        Self {
            name: "auth-failures",
            quota: state.settings.http.auth_failures_per_hour,
            window: HOUR,
        }
    }

    fn refusal(&self, retry_after_secs: u64) -> ApiError {
        let detail = match self.name {
            "tenant" => format!(
                "the tenant's API rate limit of {} requests per minute is exhausted",
                self.quota
            ),
            "sign-up" => format!("at most {} sign-ups per hour from one address", self.quota),
            "invitation-accept" => format!(
                "at most {} invitation acceptances per hour from one address",
                self.quota
            ),
            _ => format!(
                "more than {} failed authentications per hour from this address: every credential it presents \
                 is refused until the hour ends",
                self.quota
            ),
        };
        ApiError::RateLimited {
            detail,
            retry_after_secs,
        }
    }
}

/// Where a client stands against one policy, for the response's headers.
#[derive(Debug, Clone, Copy)]
struct Standing {
    policy: Policy,
    remaining: u32,
    reset_secs: u64,
}

tokio::task_local! {
    /// The standings the request's limits reported, written by `hit`/`peek`
    /// and read into headers by `headers` (both run in the request's task).
    static STANDINGS: RefCell<Vec<Standing>>;
}

fn report(standing: Standing) {
    // Outside a request (a benchmark calling a service) there is nowhere to report.
    let _ = STANDINGS.try_with(|standings| {
        let mut standings = standings.borrow_mut();
        standings.retain(|s| s.policy.name != standing.policy.name);
        standings.push(standing);
    });
}

/// Middleware: the `RateLimit-Policy` and `RateLimit` fields of every
/// limit the request was counted against.
pub async fn headers(request: Request, next: Next) -> Response {
    STANDINGS
        .scope(RefCell::new(Vec::new()), async move {
            let mut response = next.run(request).await;
            let standings = STANDINGS.with(|s| s.take());
            if !standings.is_empty() {
                let policies: Vec<String> = standings
                    .iter()
                    .map(|s| {
                        format!(
                            "\"{}\";q={};w={}",
                            s.policy.name,
                            s.policy.quota,
                            s.policy.window.as_secs()
                        )
                    })
                    .collect();
                let current: Vec<String> = standings
                    .iter()
                    .map(|s| format!("\"{}\";r={};t={}", s.policy.name, s.remaining, s.reset_secs))
                    .collect();
                let headers = response.headers_mut();
                if let Ok(value) = HeaderValue::from_str(&policies.join(", ")) {
                    headers.insert("ratelimit-policy", value);
                }
                if let Ok(value) = HeaderValue::from_str(&current.join(", ")) {
                    headers.insert("ratelimit", value);
                }
            }
            response
        })
        .await
}

fn standing(state: &AppState, policy: Policy, window: rate_limits::Window) -> Standing {
    let left = (window.resets_at - state.clock.now()).num_milliseconds().max(0);
    Standing {
        policy,
        remaining: policy.quota.saturating_sub(window.hits),
        // Rounded up: a client waiting `t` seconds finds the window reset.
        reset_secs: u64::try_from(left).unwrap_or(0).div_ceil(1000).max(1),
    }
}

/// Counts one request against `policy` in `bucket`; 429 past the quota.
async fn hit(state: &AppState, policy: Policy, bucket: &str) -> ApiResult<()> {
    let window = rate_limits::hit(&state.pool, bucket, policy.window, state.clock.now()).await?;
    let standing = standing(state, policy, window);
    report(standing);
    if window.hits > policy.quota {
        return Err(policy.refusal(standing.reset_secs));
    }
    Ok(())
}

fn address_bucket(policy: &Policy, address: Option<IpAddr>) -> String {
    match address {
        Some(address) => format!("{}:{address}", policy.name),
        None => format!("{}:unknown", policy.name),
    }
}

/// An anonymous sign-up from `address`.
pub async fn sign_up(state: &AppState, address: Option<IpAddr>) -> ApiResult<()> {
    if !state.settings.http.rate_limits {
        return Ok(());
    }
    let policy = Policy::sign_up(state);
    hit(state, policy, &address_bucket(&policy, address)).await
}

/// An invitation acceptance from `address`.
pub async fn invitation_accept(state: &AppState, address: Option<IpAddr>) -> ApiResult<()> {
    if !state.settings.http.rate_limits {
        return Ok(());
    }
    let policy = Policy::invitation_accept(state);
    hit(state, policy, &address_bucket(&policy, address)).await
}

/// Before checking a credential from `address`: 429 when the address has
/// failed too often this window (whatever it presents now, so guessing
/// cannot go on at full speed and tell right from wrong).
pub async fn before_authentication(state: &AppState, address: Option<IpAddr>) -> ApiResult<()> {
    if !state.settings.http.rate_limits {
        return Ok(());
    }
    let policy = Policy::auth_failures(state);
    let bucket = address_bucket(&policy, address);
    if let Some(window) = rate_limits::peek(&state.pool, &bucket, state.clock.now()).await?
        && window.hits >= policy.quota
    {
        let standing = standing(state, policy, window);
        report(standing);
        return Err(policy.refusal(standing.reset_secs));
    }
    Ok(())
}

/// A credential from `address` was refused.
pub async fn authentication_failed(state: &AppState, address: Option<IpAddr>) -> ApiResult<()> {
    if !state.settings.http.rate_limits {
        return Ok(());
    }
    let policy = Policy::auth_failures(state);
    let window = rate_limits::hit(
        &state.pool,
        &address_bucket(&policy, address),
        policy.window,
        state.clock.now(),
    )
    .await?;
    report(standing(state, policy, window));
    Ok(())
}

/// The plans' per-minute rates, read at most every few seconds per tenant
/// (a changed plan applies quickly); entries that old are forgotten, so the
/// cache holds only tenants active right now.
#[derive(Default)]
pub struct TenantLimits {
    limits: Mutex<HashMap<TenantId, (u32, Instant)>>,
}

const LIMIT_CACHE: Duration = Duration::from_secs(5);

impl TenantLimits {
    async fn per_minute(&self, state: &AppState, tenant_id: TenantId) -> ApiResult<u32> {
        let now = Instant::now();
        if let Some((limit, read)) = self.limits.lock().expect("limits lock").get(&tenant_id)
            && now.duration_since(*read) < LIMIT_CACHE
        {
            return Ok(*limit);
        }
        let subscription = queries::subscription(&state.pool, tenant_id).await?;
        let limit = subscription
            .entitlements(state.clock.now(), &state.catalog)
            .api_rate_per_minute;
        let mut limits = self.limits.lock().expect("limits lock");
        if limits.len() >= 1024 {
            limits.retain(|_, (_, read)| now.duration_since(*read) < LIMIT_CACHE);
        }
        limits.insert(tenant_id, (limit, now));
        Ok(limit)
    }
}

/// Rate-limits and meters one authenticated request in a tenant, under an
/// id the server chose; `client_request_id` is the client's, for correlation.
pub async fn meter(state: &AppState, tenant_id: TenantId, client_request_id: Option<&str>) -> ApiResult<()> {
    if state.settings.http.rate_limits {
        let per_minute = state.tenant_limits.per_minute(state, tenant_id).await?;
        hit(state, Policy::tenant(per_minute), &format!("tenant:{tenant_id}")).await?;
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
