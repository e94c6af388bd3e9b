//! Detections: what a tenant (or discovery, for organization sources) says
//! detects which ATT&CK techniques, for one account or an organization; and
//! the pure coverage rules the projections apply (`coverage`).

mod aggregate;
pub mod coverage;
mod error;
#[cfg(test)]
mod tests;

pub use aggregate::{
    DerivedFrom, Detection, DetectionCommand, DetectionEvent, DetectionScope, DetectionSource, DetectionStatus,
    ScopeChange, Techniques,
};
pub use error::DetectionError;

/// What the Detection aggregate needs from outside: only the time.
pub type DetectionServices = crate::tenant::TenantServices;
