//! Long reads (audit exports, verification, state as of an instant) run
//! apart from the requests everyone else makes: on their own small pool of
//! connections, at most a few at once per tenant (429 beyond), each bounded
//! in time; an export whose client stops reading is abandoned after a while.
//! So a tenant opening exports and never reading them holds its own few
//! connections, not the pool that serves every other request.

use crate::error::{ApiError, ApiResult};
use coverwatch_domain::ids::TenantId;
use sqlx::PgPool;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub struct Streaming {
    /// The connections long reads use (never the request pool).
    pub pool: PgPool,
    per_tenant: usize,
    /// An export waits this long at most for its client to read a line.
    pub idle: Duration,
    /// Any long read ends after this long.
    pub limit: Duration,
    tenants: Mutex<HashMap<TenantId, Arc<Semaphore>>>,
}

/// One running long read of a tenant: released when dropped.
pub struct StreamPermit {
    _permit: OwnedSemaphorePermit,
}

impl Streaming {
    pub fn new(pool: PgPool, per_tenant: usize, idle: Duration, limit: Duration) -> Self {
        Self {
            pool,
            per_tenant: per_tenant.max(1),
            idle,
            limit,
            tenants: Mutex::default(),
        }
    }

    /// A place for one more long read of the tenant, or 429 when it has
    /// as many running as it may.
    pub fn admit(&self, tenant_id: TenantId) -> ApiResult<StreamPermit> {
        let semaphore = {
            let mut tenants = self.tenants.lock().expect("streaming lock");
            // Forget tenants with nothing running, so the map stays small.
            tenants.retain(|_, s| s.available_permits() < self.per_tenant);
            tenants
                .entry(tenant_id)
                .or_insert_with(|| Arc::new(Semaphore::new(self.per_tenant)))
                .clone()
        };
        semaphore
            .try_acquire_owned()
            .map(|permit| StreamPermit { _permit: permit })
            .map_err(|_| ApiError::TooManyStreams {
                per_tenant: self.per_tenant,
                retry_after_secs: 5,
            })
    }

    /// Runs a long read within the time limit.
    pub async fn bounded<T>(&self, work: impl Future<Output = ApiResult<T>>) -> ApiResult<T> {
        tokio::time::timeout(self.limit, work)
            .await
            .map_err(|_| ApiError::Unavailable("the operation took too long and was stopped".into()))?
    }
}
