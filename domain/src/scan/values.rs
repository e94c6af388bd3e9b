//! What a scan observes: one thing deployed in one service and region of an
//! account (a GuardDuty detector or one of its features, a Security Hub
//! control, a Config rule, a CIS metric filter with its alarm, an
//! EventBridge rule on one API, a trail, an analyzer...).

use crate::cloud::values::Region;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// The services a scan reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Service {
    Guardduty,
    Securityhub,
    Config,
    Cloudwatch,
    Eventbridge,
    Cloudtrail,
    Accessanalyzer,
    Inspector,
    Macie,
}

impl Service {
    pub const ALL: [Service; 9] = [
        Service::Guardduty,
        Service::Securityhub,
        Service::Config,
        Service::Cloudwatch,
        Service::Eventbridge,
        Service::Cloudtrail,
        Service::Accessanalyzer,
        Service::Inspector,
        Service::Macie,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Guardduty => "guardduty",
            Self::Securityhub => "securityhub",
            Self::Config => "config",
            Self::Cloudwatch => "cloudwatch",
            Self::Eventbridge => "eventbridge",
            Self::Cloudtrail => "cloudtrail",
            Self::Accessanalyzer => "accessanalyzer",
            Self::Inspector => "inspector",
            Self::Macie => "macie",
        }
    }

    /// The name people know it by.
    pub fn display(self) -> &'static str {
        match self {
            Self::Guardduty => "GuardDuty",
            Self::Securityhub => "Security Hub",
            Self::Config => "AWS Config",
            Self::Cloudwatch => "CloudWatch",
            Self::Eventbridge => "EventBridge",
            Self::Cloudtrail => "CloudTrail",
            Self::Accessanalyzer => "IAM Access Analyzer",
            Self::Inspector => "Inspector",
            Self::Macie => "Macie",
        }
    }

    pub fn parse(input: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == input)
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One thing a scan saw. `kind` says what (`detector`, `feature:S3_DATA_EVENTS`,
/// `hub`, `standard`, `control:IAM.1`, `recorder`, `rule:CLOUD_TRAIL_ENABLED`,
/// `conformance-pack`, `cis:root-usage`, `metric-filter`, `event:ConsoleLogin`,
/// `trail`, `analyzer`, `scanning`, `macie`); `resource_id` which one;
/// `enabled` whether it is on (a disabled detector is still inventory);
/// `detail` the attributes worth showing (status, resource types...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observation {
    pub service: Service,
    pub region: Region,
    pub kind: String,
    pub resource_id: String,
    pub enabled: bool,
    #[serde(default)]
    pub detail: BTreeMap<String, String>,
}

/// What identifies an observation from one scan to the next.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ObservationKey {
    pub service: Service,
    pub region: Region,
    pub kind: String,
    pub resource_id: String,
}

impl Observation {
    pub fn key(&self) -> ObservationKey {
        ObservationKey {
            service: self.service,
            region: self.region.clone(),
            kind: self.kind.clone(),
            resource_id: self.resource_id.clone(),
        }
    }
}

/// The commercial AWS regions a scan may be narrowed to (a region outside
/// this list is refused as unknown).
pub const KNOWN_REGIONS: [&str; 34] = [
    "af-south-1",
    "ap-east-1",
    "ap-east-2",
    "ap-northeast-1",
    "ap-northeast-2",
    "ap-northeast-3",
    "ap-south-1",
    "ap-south-2",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-southeast-3",
    "ap-southeast-4",
    "ap-southeast-5",
    "ap-southeast-7",
    "ca-central-1",
    "ca-west-1",
    "eu-central-1",
    "eu-central-2",
    "eu-north-1",
    "eu-south-1",
    "eu-south-2",
    "eu-west-1",
    "eu-west-2",
    "eu-west-3",
    "il-central-1",
    "me-central-1",
    "me-south-1",
    "mx-central-1",
    "sa-east-1",
    "us-east-1",
    "us-east-2",
    "us-west-1",
    "us-west-2",
    "us-gov-west-1",
];

/// A region a scan may cover.
pub fn known_region(input: &str) -> Option<Region> {
    KNOWN_REGIONS
        .contains(&input)
        .then(|| Region::parse(input).ok())
        .flatten()
}
