//! Detections: what a tenant (or Coverwatch, for organization sources) says
//! detects which ATT&CK techniques, for one account or an organization; and
//! the pure coverage rules the projections apply (`coverage`). Layout as
//! every aggregate: `commands`, `events`, `error`, `state`, `aggregate`, with
//! the values they share in `values`.

mod aggregate;
mod commands;
pub mod coverage;
mod error;
mod events;
mod state;
#[cfg(test)]
mod tests;
mod values;

pub use commands::{DetectionCommand, ScopeChange};
pub use error::DetectionError;
pub use events::DetectionEvent;
pub use state::{Detection, DetectionStatus};
pub use values::{DerivedFrom, DetectionScope, DetectionSource, Techniques};

/// What the Detection aggregate needs from outside: only the time.
pub type DetectionServices = crate::tenant::TenantServices;
