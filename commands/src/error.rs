//! Errors of the application layer.

use coverwatch_domain::tenant::TenantError;

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The aggregate refused the command.
    #[error(transparent)]
    Tenant(#[from] TenantError),
    /// Another command changed the aggregate first, or a unique rule enforced
    /// by the log (such as a tenant slug) was already taken.
    #[error("the resource was changed concurrently")]
    Conflict,
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl From<cqrs_es::AggregateError<TenantError>> for CommandError {
    fn from(error: cqrs_es::AggregateError<TenantError>) -> Self {
        use cqrs_es::AggregateError as E;
        match error {
            E::UserError(e) => Self::Tenant(e),
            E::AggregateConflict => Self::Conflict,
            E::DatabaseConnectionError(e) => Self::Unexpected(anyhow::anyhow!(e).context("database connection")),
            E::DeserializationError(e) => Self::Unexpected(anyhow::anyhow!(e).context("event deserialization")),
            E::UnexpectedError(e) => Self::Unexpected(anyhow::anyhow!(e).context("event store")),
        }
    }
}
