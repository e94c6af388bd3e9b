//! Why a cloud aggregate refused a command.

use crate::plans::Tier;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CloudError {
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Rule(String),
    /// The plan's limit on connected accounts would be exceeded.
    #[error("the cloud_accounts limit of the plan is reached: {used} of {limit} in use")]
    LimitReached { used: u64, limit: u64 },
    /// The tier lacks a feature (organization features).
    #[error("{feature} needs the {required_tier} tier or above")]
    FeatureNotInPlan { feature: &'static str, required_tier: Tier },
}
