//! Workflows: what reacts to events or spans aggregates, apart from HTTP
//! handlers and from read models' transactions. Each says whether commands
//! wait for it:
//!
//! * `derived_detections`: a subscriber that registers, updates and retires
//!   detections for organization-level sources (awaited).
//! * `usage_thresholds`: a subscriber that records 80 % / 100 % crossings of
//!   plan limits (awaited).
//! * `discovery`: background discovery runs with their progress rows (not
//!   awaited: a run answers with its id at once).
//! * `connect_members`: the saga connecting an organization's members
//!   across two aggregates (runs within its request, waiting for the read
//!   models after each step).
//! * `scan`: account scan runs as durable jobs (`jobs`), on demand and on
//!   schedule, with their progress rows (not awaited: a run answers with its
//!   id at once).
//! * `schedule`: the upkeep loop (due subscription transitions, coverage
//!   history, due scans and re-discoveries), never awaited.
//!
//! They use the application services and the read models' queries; the API
//! starts them. None knows about HTTP.

pub mod connect_members;
pub mod derived_detections;
pub mod discovery;
pub mod jobs;
pub mod scan;
pub mod schedule;
pub mod usage_thresholds;

pub use connect_members::ConnectMembers;
pub use derived_detections::DerivedDetections;
pub use discovery::DiscoveryWorkflow;
pub use scan::ScanWorkflow;
pub use usage_thresholds::UsageThresholds;

use crate::error::CommandError;
use crate::services::BillingService;
use chrono::{DateTime, Utc};
use coverwatch_domain::cloud::CloudOrganizationError;
use coverwatch_domain::ids::{OrganizationId, TenantId};
use coverwatch_domain::plans::{PlanCatalog, require_org_features};
use coverwatch_projections::cloud::queries::{OrganizationRow, organization};
use sqlx::pool::PoolConnection;
use sqlx::{PgPool, Postgres};

/// The tenant's organization as the cloud read model holds it, for a
/// workflow that needs the plan's organization features: refused with the
/// plan rule's own answer without them, before any AWS call.
async fn organization_with_features(
    pool: &PgPool,
    billing: &BillingService,
    catalog: &PlanCatalog,
    tenant_id: TenantId,
    organization_id: OrganizationId,
) -> Result<OrganizationRow, CommandError> {
    let row = organization(pool, tenant_id, organization_id)
        .await?
        .ok_or(CloudOrganizationError::NotFound("cloud organization"))?;
    let org_features = billing.entitlements(tenant_id).await?.org_features;
    require_org_features(
        org_features,
        catalog.cheapest_with_org_features(),
        "organization features",
    )
    .map_err(CloudOrganizationError::from)?;
    Ok(row)
}

/// A share of the interval fixed by an id (an account's, an organization's):
/// FNV-1a, stable across processes and versions, unlike the standard hasher.
pub(crate) fn spread(id: &str, interval: chrono::Duration) -> chrono::Duration {
    let hash = id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let seconds = interval.num_seconds().max(1) as u64;
    chrono::Duration::seconds((hash % seconds) as i64)
}

/// Whether something scheduled every `interval` is due: each id has its own
/// phase in the interval (`spread`), and it is due when a phase point has
/// passed since `reference` (its last run, or when it was added). So ids
/// come due spread over the interval, each at the same point of every
/// interval, and a late or slow run does not drift the next one.
pub(crate) fn due(id: &str, interval: chrono::Duration, reference: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    let period = interval.num_seconds().max(1);
    let phase = spread(id, interval).num_seconds();
    let since = now.timestamp() - phase;
    let point = since.div_euclid(period) * period + phase;
    reference.timestamp() < point
}

/// A session advisory lock on its own connection, so one process at a time
/// starts scheduled work (several may run the upkeep loop); None when
/// another holds it. Released by `unlock`, or when the connection closes.
pub(crate) async fn try_lock(pool: &PgPool, name: &str) -> sqlx::Result<Option<PoolConnection<Postgres>>> {
    let mut connection = pool.acquire().await?;
    let held: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtext($1))")
        .bind(name)
        .fetch_one(&mut *connection)
        .await?;
    Ok(held.then_some(connection))
}

pub(crate) async fn unlock(mut connection: PoolConnection<Postgres>, name: &str) {
    if let Err(error) = sqlx::query("SELECT pg_advisory_unlock(hashtext($1))")
        .bind(name)
        .execute(&mut *connection)
        .await
    {
        // Dropping the connection from the pool releases it instead.
        tracing::warn!(error = %error, "releasing a schedule lock failed");
        connection.detach();
    }
}

#[cfg(test)]
mod tests {
    use super::due;
    use chrono::{Duration, TimeZone, Utc};

    #[test]
    fn each_id_comes_due_once_per_interval_at_its_own_phase() {
        let hour = Duration::hours(1);
        let start = Utc.with_ymd_and_hms(2026, 12, 2, 0, 0, 0).unwrap();
        let mut first = std::collections::BTreeSet::new();
        for i in 0..20 {
            let id = format!("1111222233{i:02}");
            // Added at `start`, checked every minute for three hours, each
            // run recorded when it was due.
            let mut reference = start;
            let mut runs = vec![];
            for minute in 1..=180 {
                let now = start + Duration::minutes(minute);
                if due(&id, hour, reference, now) {
                    runs.push(minute);
                    reference = now;
                }
            }
            assert_eq!(runs.len(), 3, "{id}: {runs:?}");
            assert!(
                runs[0] <= 60 && runs[1] - runs[0] == 60 && runs[2] - runs[1] == 60,
                "{runs:?}"
            );
            first.insert(runs[0] / 10);
        }
        assert!(first.len() >= 4, "spread over the hour: {first:?}");
    }
}
