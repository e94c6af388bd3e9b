//! Why the Tenant aggregate refused a command. The API maps each kind to a
//! status and a stable problem type.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TenantError {
    #[error("the tenant already exists")]
    AlreadyExists,
    #[error("tenant not found")]
    NotFound,
    #[error("the tenant is suspended: members can read but not write")]
    Suspended,
    #[error("{0}")]
    Forbidden(String),
    #[error("the tenant is at version {actual}, not the expected {expected}")]
    VersionMismatch { expected: u64, actual: u64 },
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Rule(String),
    #[error("{0} not found")]
    NotFoundItem(&'static str),
    /// A plan limit (from the subscription) would be exceeded.
    #[error("the {metric} limit of the plan is reached: {used} of {limit} in use")]
    LimitReached {
        metric: &'static str,
        used: u64,
        limit: u64,
    },
    #[error("the invitation is no longer valid: {0}")]
    InvitationGone(&'static str),
}
