//! The application layer: runs commands through cqrs-es over postgres-es with
//! the metadata every event carries and reports where the commit landed in
//! the global order so callers can wait for read models (read-your-writes).
//!
//! * `executor`, `metadata`, `error`: running commands.
//! * `services`: one application service per aggregate.
//! * `workflows`: process managers, sagas and scheduled jobs.
//! * `adapters`: AWS and Stripe.
//! * `consistency` (waiting for read models), `log` (lookups in the event
//!   log), `idempotency` (the `Idempotency-Key` store), `rate_limits` (the
//!   rate limits' shared counters), `secrets` (keys and tokens, stored
//!   hashed), `snapshots` (sealed aggregate snapshots).

pub mod adapters;
pub mod consistency;
pub mod error;
pub mod executor;
pub mod idempotency;
pub mod log;
pub mod metadata;
pub mod rate_limits;
pub mod secrets;
pub mod services;
pub mod snapshots;
pub mod workflows;

pub use consistency::ReadModels;
pub use error::CommandError;
pub use executor::{
    CloudAccountsCommands, CloudOrganizationCommands, Commands, Committed, DetectionCommands, InventoryCommands,
    RETRIES, SubscriptionCommands, TenantCommands,
};
pub use metadata::CommandMetadata;
