//! The Tenant aggregate: a customer organization with its members, roles,
//! invitations, API keys, parent/child hierarchy and platform-level suspension.

mod aggregate;
mod commands;
mod error;
mod events;
#[cfg(test)]
mod tests;

pub use aggregate::{ApiKeyState, InvitationState, MemberState, Tenant, TenantServices};
pub use commands::{Actor, NewApiKey, ParentTenant, ProfileChanges, TenantCommand, Versioned};
pub use error::TenantError;
pub use events::{InvitationStatus, MemberStatus, TenantEvent, TenantStatus};

/// Tenants nest at most this deep (root = 1), e.g. MSSP → customer → business unit.
pub const MAX_HIERARCHY_DEPTH: usize = 5;
