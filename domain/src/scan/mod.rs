//! Account scanning: what a scan observes in an account (`values`), how an
//! observation maps to ATT&CK (`mapping`, from the shipped data in
//! `domain/data/scanning/` and the CTID mappings), how a service seen in
//! only some regions counts (`coverage`), and the AccountInventory
//! aggregate that records, scan after scan, what was found, changed and
//! removed (`inventory`).

pub mod coverage;
pub mod inventory;
pub mod mapping;
mod values;

pub use values::{KNOWN_REGIONS, Observation, ObservationKey, Service, known_region};
