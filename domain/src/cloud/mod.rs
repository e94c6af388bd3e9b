//! Cloud accounts and organizations. `CloudAccounts` is one aggregate per
//! tenant (under the tenant's id) holding every account the tenant connected,
//! standalone or from an organization: the account limit is decided there, so
//! it holds under concurrent requests. `CloudOrganization` is one aggregate
//! per connected AWS/GCP organization, with what discovery found in it.

mod accounts;
mod error;
pub mod hierarchy;
mod organization;
pub mod role_template;
pub mod sources;
#[cfg(test)]
mod tests;
pub mod values;

pub use accounts::{
    AccountSource, AccountState, AccountStatus, CloudAccounts, CloudAccountsCommand, CloudAccountsEvent, NewAccount,
};
pub use error::CloudError;
pub use organization::{
    CloudOrganization, CloudOrganizationCommand, CloudOrganizationEvent, MemberLink, OrganizationStatus,
};

/// What both cloud aggregates need from outside: only the time.
pub type CloudServices = crate::tenant::TenantServices;
