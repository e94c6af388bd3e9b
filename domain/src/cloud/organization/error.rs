//! Why the CloudOrganization aggregate refused a command.

use crate::plans::{FeatureNotInPlan, Tier};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CloudOrganizationError {
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Rule(String),
    /// The tier lacks a feature (organization features).
    #[error("{feature} needs the {required_tier} tier or above")]
    FeatureNotInPlan { feature: &'static str, required_tier: Tier },
}

impl From<FeatureNotInPlan> for CloudOrganizationError {
    fn from(refused: FeatureNotInPlan) -> Self {
        Self::FeatureNotInPlan {
            feature: refused.feature,
            required_tier: refused.required_tier,
        }
    }
}
