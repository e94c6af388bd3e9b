//! What discovery finds beside the hierarchy: delegated administrators, SCPs
//! with their targets (preventive controls, never detections) and the
//! organization-level detection sources (organization CloudTrail trails,
//! AWS Config aggregators, Security Hub and GuardDuty administrators).

use super::hierarchy::DiscoveredHierarchy;
use super::values::OrganizationStatus;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// An account AWS Organizations lists as a delegated administrator.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DelegatedAdministrator {
    pub account_id: String,
    pub name: String,
    /// Service principals it administers, sorted (`guardduty.amazonaws.com`).
    pub service_principals: Vec<String>,
}

/// Where an SCP is attached.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PolicyTarget {
    pub target_id: String,
    /// ROOT, ORGANIZATIONAL_UNIT or ACCOUNT.
    pub kind: String,
    pub name: String,
}

/// A service control policy: a preventive control, recorded and shown but
/// never counted as a detection.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ServiceControlPolicy {
    pub id: String,
    pub name: String,
    pub aws_managed: bool,
    /// Sorted by target id.
    pub targets: Vec<PolicyTarget>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    CloudtrailOrganizationTrail,
    ConfigAggregator,
    SecurityHub,
    Guardduty,
}

impl SourceKind {
    pub const ALL: [SourceKind; 4] = [
        Self::CloudtrailOrganizationTrail,
        Self::ConfigAggregator,
        Self::SecurityHub,
        Self::Guardduty,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::CloudtrailOrganizationTrail => "cloudtrail_organization_trail",
            Self::ConfigAggregator => "config_aggregator",
            Self::SecurityHub => "security_hub",
            Self::Guardduty => "guardduty",
        }
    }
}

/// What each kind of source says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SourceDetail {
    CloudtrailOrganizationTrail {
        home_region: String,
        multi_region: bool,
        /// GetTrailStatus's IsLogging; None when the status could not be read.
        logging: Option<bool>,
        s3_bucket: Option<String>,
    },
    ConfigAggregator {
        /// An organization aggregation source (all accounts) or listed ones.
        organization: bool,
        account_ids: Vec<String>,
        all_regions: bool,
        regions: Vec<String>,
    },
    /// The Security Hub administrator (delegated through Organizations).
    SecurityHub { administrator_account_id: String },
    /// The GuardDuty delegated administrator.
    Guardduty { administrator_account_id: String },
}

/// One organization-level detection source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrganizationSource {
    /// Stable across runs: the trail or aggregator ARN, or
    /// `guardduty:<admin account>` / `securityhub:<admin account>`.
    pub id: String,
    pub name: String,
    /// The account that holds it (trail home, aggregator, administrator).
    pub account_id: String,
    pub detail: SourceDetail,
}

impl OrganizationSource {
    pub fn kind(&self) -> SourceKind {
        match self.detail {
            SourceDetail::CloudtrailOrganizationTrail { .. } => SourceKind::CloudtrailOrganizationTrail,
            SourceDetail::ConfigAggregator { .. } => SourceKind::ConfigAggregator,
            SourceDetail::SecurityHub { .. } => SourceKind::SecurityHub,
            SourceDetail::Guardduty { .. } => SourceKind::Guardduty,
        }
    }
}

/// Everything one discovery run read. A part that could not be read is
/// `None` (or its kind is listed in `unread_source_kinds`): what it held
/// before is kept, since absence there means nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Discovered {
    pub hierarchy: DiscoveredHierarchy,
    pub delegated_administrators: Option<Vec<DelegatedAdministrator>>,
    pub policies: Option<Vec<ServiceControlPolicy>>,
    pub sources: Vec<OrganizationSource>,
    pub unread_source_kinds: BTreeSet<SourceKind>,
}

impl Discovered {
    /// A run's own outcome: connected when it read everything, partial when
    /// it missed parts but found some of the hierarchy, error otherwise.
    pub fn outcome(&self, errors: &[String]) -> OrganizationStatus {
        let nothing = self.hierarchy.ous.is_empty() && self.hierarchy.accounts.is_empty();
        match (errors.is_empty(), nothing) {
            (true, _) => OrganizationStatus::Connected,
            (false, false) => OrganizationStatus::Partial,
            (false, true) => OrganizationStatus::Error,
        }
    }
}
