//! The CloudOrganization aggregate's application service: registration with
//! the plan's organization features and the tenant's external id, and where
//! scans of its members look.

use crate::error::CommandError;
use crate::executor::{CloudOrganizationCommands, Committed};
use crate::idempotency::fresh_id;
use crate::metadata::CommandMetadata;
use crate::services::billing::BillingService;
use coverwatch_domain::cloud::CloudOrganizationCommand;
use coverwatch_domain::cloud::values::{AwsAccountId, Provider, Region, RoleArn};
use coverwatch_domain::ids::{OrganizationId, TenantId};
use coverwatch_domain::plans::PlanCatalog;
use coverwatch_domain::values::Name;
use std::collections::BTreeSet;
use std::sync::Arc;

pub struct CloudOrganizationService {
    pub organizations: Arc<CloudOrganizationCommands>,
    pub billing: Arc<BillingService>,
    pub catalog: Arc<PlanCatalog>,
}

/// An organization to register, as the tenant described it.
#[derive(Debug, Clone)]
pub struct Registration {
    pub provider: Provider,
    /// The AWS organization id, `o-...`.
    pub external_org_id: String,
    pub management_account_id: AwsAccountId,
    pub role_arn: RoleArn,
    pub name: Name,
    /// The audit role's name in member accounts.
    pub member_role_name: String,
}

/// The external id every role of a tenant must require in its trust policy.
pub fn external_id(tenant_id: TenantId) -> String {
    format!("coverwatch-{tenant_id}")
}

impl CloudOrganizationService {
    pub async fn register(
        &self,
        tenant_id: TenantId,
        registration: Registration,
        metadata: &CommandMetadata,
    ) -> Result<(OrganizationId, Committed), CommandError> {
        let organization_id: OrganizationId = fresh_id("organization");
        let command = CloudOrganizationCommand::Register {
            organization_id,
            tenant_id,
            provider: registration.provider,
            external_org_id: registration.external_org_id,
            management_account_id: registration.management_account_id,
            role_arn: registration.role_arn,
            external_id: external_id(tenant_id),
            name: registration.name,
            member_role_name: registration.member_role_name,
            org_features: self.billing.entitlements(tenant_id).await?.org_features,
            cheapest_with_org_features: self.catalog.cheapest_with_org_features(),
        };
        let committed = self.organizations.execute(organization_id, command, metadata).await?;
        Ok((organization_id, committed))
    }

    /// Where scans of the organization's members look, unless an account
    /// says otherwise (None: every enabled region).
    pub async fn set_scan_regions(
        &self,
        organization_id: OrganizationId,
        regions: Option<BTreeSet<Region>>,
        metadata: &CommandMetadata,
    ) -> Result<Committed, CommandError> {
        let command = CloudOrganizationCommand::SetScanRegions { regions };
        self.organizations
            .execute_retrying(organization_id, command, metadata, crate::executor::RETRIES)
            .await
    }
}
