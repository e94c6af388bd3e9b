//! The application layer: runs commands through cqrs-es over postgres-es, with
//! the metadata every event carries, and reports where the commit landed in
//! the global order so callers can wait for read models (read-your-writes).
//! The Stripe client and webhook verification live here too.

pub mod aws;
pub mod billing;
pub mod error;
pub mod executor;
pub mod metadata;
pub mod secrets;
pub mod stripe;

pub use error::CommandError;
pub use executor::{
    CloudAccountsCommands, CloudOrganizationCommands, Commands, Committed, DetectionCommands, SubscriptionCommands,
    TenantCommands,
};
pub use metadata::CommandMetadata;
