//! What may be asked of a cloud organization.

use crate::cloud::sources::Discovered;
use crate::cloud::values::{AwsAccountId, Provider, RoleArn};
use crate::ids::{OrganizationId, RunId, TenantId};
use crate::plans::Tier;
use crate::values::Name;

#[derive(Debug, Clone, PartialEq)]
pub enum CloudOrganizationCommand {
    Register {
        organization_id: OrganizationId,
        tenant_id: TenantId,
        provider: Provider,
        external_org_id: String,
        management_account_id: AwsAccountId,
        role_arn: RoleArn,
        external_id: String,
        name: Name,
        /// The audit role's name in member accounts.
        member_role_name: String,
        /// Whether the tenant's plan has organization features now, and the
        /// cheapest tier that does (for the refusal).
        org_features: bool,
        cheapest_with_org_features: Tier,
    },
    /// The tenant selected these discovered members for connection (which
    /// needs the plan's organization features).
    RequestMemberConnections {
        account_ids: Vec<String>,
        org_features: bool,
        cheapest_with_org_features: Tier,
    },
    /// A member's audit role was assumed and the account connected.
    RecordMemberConnected { account_id: String },
    /// Connecting a member failed (its role could not be assumed, or it is
    /// not active); the reason is the member's status reason.
    RecordMemberFailure { account_id: String, reason: String },
    /// The tenant disconnected a member: it is no longer selected.
    RecordMemberDisconnected { account_id: String },
    /// What a discovery run found; `errors` are the parts it could not read.
    RecordDiscovery {
        run_id: RunId,
        found: Discovered,
        errors: Vec<String>,
    },
    /// Where scans of the members look, unless an account says otherwise
    /// (None: every enabled region).
    SetScanRegions {
        regions: Option<std::collections::BTreeSet<crate::cloud::values::Region>>,
    },
}
