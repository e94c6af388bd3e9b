//! Why the CloudAccounts aggregate refused a command.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CloudAccountsError {
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Rule(String),
    /// The command would change nothing (answered as it stands).
    #[error("nothing to change")]
    Unchanged,
    /// The plan's limit on connected accounts would be exceeded.
    #[error("the cloud_accounts limit of the plan is reached: {used} of {limit} in use")]
    LimitReached { used: u64, limit: u64 },
}
