//! Replay for auditors: recompute and verify the log's hash chains with code
//! independent of the database trigger, and rebuild read models from position 0.

pub mod hash;
pub mod rebuild;
pub mod verify;
