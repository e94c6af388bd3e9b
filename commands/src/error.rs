//! Errors of the application layer: what an aggregate refused, a lost race,
//! or something unexpected (with its context).

use coverwatch_domain::cloud::{CloudAccountsError, CloudOrganizationError};
use coverwatch_domain::detection::DetectionError;
use coverwatch_domain::scan::inventory::InventoryError;
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
    CloudAccounts(#[from] CloudAccountsError),
    #[error(transparent)]
    CloudOrganization(#[from] CloudOrganizationError),
    #[error(transparent)]
    Detection(#[from] DetectionError),
    #[error(transparent)]
    Inventory(#[from] InventoryError),
    /// Another command changed the aggregate first, or a unique rule enforced
    /// by the log (such as a tenant slug) was already taken.
    #[error("the resource was changed concurrently")]
    Conflict,
    /// A retry under an idempotency key found the first attempt's step on
    /// another resource than it would change now: it stops there.
    #[error(
        "the first attempt under this Idempotency-Key took other steps than this retry would; what it committed stands"
    )]
    Diverged,
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl From<sqlx::Error> for CommandError {
    fn from(error: sqlx::Error) -> Self {
        Self::Unexpected(anyhow::Error::new(error).context("database"))
    }
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
