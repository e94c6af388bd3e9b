//! The Tenant aggregate: a customer organization with its members, roles,
//! invitations, API keys, parent/child hierarchy and platform-level suspension.
//! Layout (as every aggregate): `commands`, `events`, `error`, `state` (the
//! fold and the reads decisions make), `aggregate` (one decision per command).

mod aggregate;
mod commands;
mod error;
mod events;
mod state;
#[cfg(test)]
mod tests;

pub use aggregate::TenantServices;
pub use commands::{Actor, NewApiKey, ParentTenant, ProfileChanges, TenantCommand, Versioned};
pub use error::TenantError;
pub use events::{InvitationStatus, MemberStatus, TenantEvent, TenantStatus};
pub use state::{ApiKeyState, InvitationState, MemberState, Tenant};

/// Tenants nest at most this deep (root = 1), e.g. MSSP → customer → business unit.
pub const MAX_HIERARCHY_DEPTH: usize = 5;
