//! The CloudAccounts aggregate: one per tenant (under the tenant's id)
//! holding every account the tenant connected, standalone or from an
//! organization, with its status. The plan's account limit is decided here,
//! so it holds under concurrent requests; only connected accounts count.

mod aggregate;
mod commands;
mod error;
mod events;
mod state;
#[cfg(test)]
mod tests;

pub use commands::{CloudAccountsCommand, NewAccount};
pub use error::CloudAccountsError;
pub use events::CloudAccountsEvent;
pub use state::{AccountSource, AccountState, AccountStatus, CloudAccounts};
