//! What detections are described with: techniques and confidences, their
//! source, their scope (an invariant: an account scope names one account; an
//! organization scope all of its accounts or a non-empty subset) and, for
//! detections Coverwatch derives, what they were derived from.

use super::error::DetectionError;
use crate::attack::{Confidence, TechniqueId};
use crate::cloud::values::AwsAccountId;
use crate::ids::OrganizationId;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Technique → confidence.
pub type Techniques = BTreeMap<TechniqueId, Confidence>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DetectionSource {
    Guardduty,
    SecurityhubControl,
    ConfigRule,
    CloudtrailMetricFilter,
    EventbridgeRule,
    SccFinding,
    LogSink,
    Custom,
}

impl DetectionSource {
    pub const ALL: [Self; 8] = [
        Self::Guardduty,
        Self::SecurityhubControl,
        Self::ConfigRule,
        Self::CloudtrailMetricFilter,
        Self::EventbridgeRule,
        Self::SccFinding,
        Self::LogSink,
        Self::Custom,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Guardduty => "guardduty",
            Self::SecurityhubControl => "securityhub_control",
            Self::ConfigRule => "config_rule",
            Self::CloudtrailMetricFilter => "cloudtrail_metric_filter",
            Self::EventbridgeRule => "eventbridge_rule",
            Self::SccFinding => "scc_finding",
            Self::LogSink => "log_sink",
            Self::Custom => "custom",
        }
    }

    pub fn parse(input: &str) -> Result<Self, String> {
        Self::ALL.into_iter().find(|s| s.as_str() == input).ok_or_else(|| {
            let names: Vec<&str> = Self::ALL.iter().map(|s| s.as_str()).collect();
            format!("source must be one of {}", names.join(", "))
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum DetectionScope {
    Account {
        account_id: AwsAccountId,
    },
    Organization {
        organization_id: OrganizationId,
        /// None: every account of the organization; else exactly these.
        accounts: Option<BTreeSet<AwsAccountId>>,
    },
}

impl DetectionScope {
    pub fn is_organization(&self) -> bool {
        matches!(self, Self::Organization { .. })
    }

    pub(super) fn check(&self) -> Result<(), DetectionError> {
        match self {
            Self::Organization {
                accounts: Some(accounts),
                ..
            } if accounts.is_empty() => Err(DetectionError::Rule(
                "an organization-scoped detection applies to all accounts or a non-empty subset".into(),
            )),
            _ => Ok(()),
        }
    }
}

/// A detection Coverwatch registered for an organization-level source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DerivedFrom {
    pub organization_id: OrganizationId,
    /// The source's id (trail or aggregator ARN, `guardduty:<account>`).
    pub source_id: String,
    /// The CTID mapping set the techniques come from.
    pub mapping_version: String,
}
