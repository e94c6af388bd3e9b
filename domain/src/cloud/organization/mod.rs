//! The CloudOrganization aggregate: a tenant's AWS (or GCP) organization,
//! registered with the role Coverwatch assumes. Registering needs the plan's
//! organization features. Each discovery run is recorded as the changes it
//! found (hierarchy, delegated administrators, SCPs, organization sources);
//! the organization's status is derived from the last run and from the
//! connections of the members the tenant selected.

mod aggregate;
mod commands;
mod error;
mod events;
mod state;
#[cfg(test)]
mod tests;

pub use aggregate::valid_aws_organization_id;
pub use commands::CloudOrganizationCommand;
pub use error::CloudOrganizationError;
pub use events::CloudOrganizationEvent;
pub use state::{CloudOrganization, MemberLink};
