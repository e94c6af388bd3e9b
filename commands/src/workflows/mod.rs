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
//!   history, due scans), never awaited.
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
use coverwatch_domain::cloud::CloudOrganizationError;
use coverwatch_domain::ids::{OrganizationId, TenantId};
use coverwatch_domain::plans::{PlanCatalog, require_org_features};
use coverwatch_projections::cloud::queries::{OrganizationRow, organization};
use sqlx::PgPool;

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
