//! Coverwatch's pure domain model: aggregates, their commands and events, and
//! the value types they are built from. No I/O and no SQL live here; time comes
//! in through the [`clock::Clock`] service so rules about expiry are testable.

pub mod attack;
pub mod clock;
pub mod cloud;
pub mod detection;
pub mod emit;
pub mod ids;
pub mod plans;
pub mod scan;
pub mod subscription;
pub mod tenant;
pub mod values;
