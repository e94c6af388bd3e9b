//! The application layer: runs commands through cqrs-es over postgres-es, with
//! the metadata every event carries, and reports where the commit landed in
//! the global order so callers can wait for read models (read-your-writes).

pub mod error;
pub mod metadata;
pub mod secrets;
pub mod tenants;

pub use error::CommandError;
pub use metadata::CommandMetadata;
pub use tenants::{Committed, TenantCommands};
