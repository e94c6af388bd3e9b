//! The AccountInventory aggregate: what the scans of one connected account
//! have found, service by service and region by region. A scan is recorded
//! as what it found, changed and removed against the previous one (a
//! re-scan that finds nothing new appends nothing); a service or region the
//! scan could not read keeps what the previous scan found there. Layout as
//! every aggregate.

mod aggregate;
mod commands;
mod error;
mod events;
mod state;
#[cfg(test)]
mod tests;

pub use commands::InventoryCommand;
pub use error::InventoryError;
pub use events::InventoryEvent;
pub use state::{AccountInventory, inventory_id};

/// What the AccountInventory aggregate needs from outside: nothing but time.
pub type InventoryServices = crate::tenant::TenantServices;
