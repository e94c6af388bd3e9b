//! Why the Subscription aggregate refused a command.

use crate::plans::Tier;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubscriptionError {
    #[error("the subscription already exists")]
    AlreadyExists,
    #[error("subscription not found")]
    NotFound,
    #[error("{0}")]
    Rule(String),
    #[error("{0}")]
    Conflict(String),
    /// A downgrade that would leave the tenant above the target tier's limit.
    #[error("{metric}: {used} in use, the {tier} tier allows {limit}")]
    OverTargetLimit {
        metric: &'static str,
        used: u64,
        limit: u64,
        tier: Tier,
    },
    #[error("billing is not configured on this server")]
    BillingNotConfigured,
    #[error("Stripe refused the change: {0}")]
    Gateway(String),
}
