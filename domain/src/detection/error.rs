//! Why the Detection aggregate refused a command.

use crate::plans::Tier;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DetectionError {
    #[error("detection not found")]
    NotFound,
    #[error("the detection is already registered")]
    AlreadyRegistered,
    #[error("the detection is at version {actual}, not {expected}")]
    VersionMismatch { expected: u64, actual: u64 },
    #[error("the detection is retired")]
    Retired,
    #[error("{0}")]
    Rule(String),
    #[error("{feature} needs the {required_tier} tier or above")]
    FeatureNotInPlan { feature: &'static str, required_tier: Tier },
}

impl From<crate::plans::FeatureNotInPlan> for DetectionError {
    fn from(refused: crate::plans::FeatureNotInPlan) -> Self {
        Self::FeatureNotInPlan {
            feature: refused.feature,
            required_tier: refused.required_tier,
        }
    }
}
