//! Cloud accounts and organizations: the two aggregates (`accounts`: one per
//! tenant, every account it connected and the plan's account limit;
//! `organization`: one per connected AWS/GCP organization, with what
//! discovery found in it), and what they are described with (`values`,
//! `hierarchy`, `sources`) and deployed with (`role_template`).

pub mod accounts;
pub mod hierarchy;
pub mod organization;
pub mod role_template;
pub mod sources;
pub mod values;

pub use accounts::{
    AccountSource, AccountState, AccountStatus, CloudAccounts, CloudAccountsCommand, CloudAccountsError,
    CloudAccountsEvent, NewAccount,
};
pub use organization::{
    CloudOrganization, CloudOrganizationCommand, CloudOrganizationError, CloudOrganizationEvent, MemberLink,
};
pub use values::OrganizationStatus;

/// What both cloud aggregates need from outside: only the time.
pub type CloudServices = crate::tenant::TenantServices;
