//! Errors of the application layer.

use coverwatch_domain::subscription::SubscriptionError;
use coverwatch_domain::tenant::TenantError;

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The aggregate refused the command.
    #[error(transparent)]
    Tenant(#[from] TenantError),
    #[error(transparent)]
    Subscription(#[from] SubscriptionError),
    #[error(transparent)]
    Cloud(#[from] coverwatch_domain::cloud::CloudError),
    #[error(transparent)]
    Detection(#[from] coverwatch_domain::detection::DetectionError),
    /// Another command changed the aggregate first, or a unique rule enforced
    /// by the log (such as a tenant slug) was already taken.
    #[error("the resource was changed concurrently")]
    Conflict,
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl<E> From<cqrs_es::AggregateError<E>> for CommandError
where
    E: std::error::Error + Into<CommandError>,
{
    fn from(error: cqrs_es::AggregateError<E>) -> Self {
        use cqrs_es::AggregateError as E;
        match error {
            E::UserError(e) => e.into(),
            E::AggregateConflict => Self::Conflict,
            E::DatabaseConnectionError(e) => Self::Unexpected(anyhow::anyhow!(e).context("database connection")),
            E::DeserializationError(e) => Self::Unexpected(anyhow::anyhow!(e).context("event deserialization")),
            E::UnexpectedError(e) => Self::Unexpected(anyhow::anyhow!(e).context("event store")),
        }
    }
}
