//! What happened to a cloud organization (version 1.0): registration, what
//! each discovery found and changed, and the tenant's member selection.

use crate::cloud::hierarchy::{DiscoveredAccount, DiscoveredOu};
use crate::cloud::sources::{DelegatedAdministrator, OrganizationSource, ServiceControlPolicy, SourceKind};
use crate::cloud::values::{AwsAccountId, OrganizationStatus, Provider, RoleArn};
use crate::ids::{OrganizationId, RunId, TenantId};
use crate::values::Name;
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CloudOrganizationEvent {
    CloudOrganizationRegistered {
        organization_id: OrganizationId,
        tenant_id: TenantId,
        provider: Provider,
        external_org_id: String,
        management_account_id: AwsAccountId,
        role_arn: RoleArn,
        external_id: String,
        name: Name,
        member_role_name: String,
    },
    OrganizationalUnitFound {
        ou: DiscoveredOu,
    },
    OrganizationalUnitMoved {
        from_path: String,
        ou: DiscoveredOu,
    },
    OrganizationalUnitRemoved {
        id: String,
        path: String,
    },
    MemberAccountFound {
        account: DiscoveredAccount,
    },
    MemberAccountMoved {
        from_path: String,
        account: DiscoveredAccount,
    },
    MemberAccountStatusChanged {
        from: String,
        account: DiscoveredAccount,
    },
    MemberAccountRemoved {
        id: String,
        path: String,
    },
    /// The whole set, recorded when it differs from the last one.
    DelegatedAdministratorsChanged {
        administrators: Vec<DelegatedAdministrator>,
    },
    /// The whole set of SCPs with their targets, when it differs.
    ServiceControlPoliciesChanged {
        policies: Vec<ServiceControlPolicy>,
    },
    OrganizationSourceFound {
        source: OrganizationSource,
    },
    OrganizationSourceChanged {
        source: OrganizationSource,
    },
    OrganizationSourceRemoved {
        id: String,
        kind: SourceKind,
    },
    MemberConnectionsRequested {
        account_ids: Vec<String>,
    },
    MemberConnected {
        account_id: String,
    },
    MemberConnectionFailed {
        account_id: String,
        reason: String,
    },
    MemberDisconnected {
        account_id: String,
    },
    DiscoveryCompleted {
        run_id: RunId,
        ous: u64,
        accounts: u64,
        errors: Vec<String>,
        /// The run's own outcome.
        status: OrganizationStatus,
    },
    /// The organization's derived status moved.
    OrganizationStatusChanged {
        from: OrganizationStatus,
        to: OrganizationStatus,
    },
    OrganizationScanRegionsSet {
        regions: Option<std::collections::BTreeSet<crate::cloud::values::Region>>,
    },
}

impl DomainEvent for CloudOrganizationEvent {
    fn event_type(&self) -> String {
        match self {
            Self::CloudOrganizationRegistered { .. } => "CloudOrganizationRegistered",
            Self::OrganizationalUnitFound { .. } => "OrganizationalUnitFound",
            Self::OrganizationalUnitMoved { .. } => "OrganizationalUnitMoved",
            Self::OrganizationalUnitRemoved { .. } => "OrganizationalUnitRemoved",
            Self::MemberAccountFound { .. } => "MemberAccountFound",
            Self::MemberAccountMoved { .. } => "MemberAccountMoved",
            Self::MemberAccountStatusChanged { .. } => "MemberAccountStatusChanged",
            Self::MemberAccountRemoved { .. } => "MemberAccountRemoved",
            Self::DelegatedAdministratorsChanged { .. } => "DelegatedAdministratorsChanged",
            Self::ServiceControlPoliciesChanged { .. } => "ServiceControlPoliciesChanged",
            Self::OrganizationSourceFound { .. } => "OrganizationSourceFound",
            Self::OrganizationSourceChanged { .. } => "OrganizationSourceChanged",
            Self::OrganizationSourceRemoved { .. } => "OrganizationSourceRemoved",
            Self::MemberConnectionsRequested { .. } => "MemberConnectionsRequested",
            Self::MemberConnected { .. } => "MemberConnected",
            Self::MemberConnectionFailed { .. } => "MemberConnectionFailed",
            Self::MemberDisconnected { .. } => "MemberDisconnected",
            Self::DiscoveryCompleted { .. } => "DiscoveryCompleted",
            Self::OrganizationStatusChanged { .. } => "OrganizationStatusChanged",
            Self::OrganizationScanRegionsSet { .. } => "OrganizationScanRegionsSet",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        "1.0".to_owned()
    }
}
