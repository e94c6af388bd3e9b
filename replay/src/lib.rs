//! Replay for auditors: blue/green rebuilds of read models, the state of a
//! tenant as of any instant, verification of the history (hash chains, signed
//! global and per-tenant digests, aggregate heads) and signed audit bundles
//! that a third party verifies offline.

pub mod bundle;
pub mod hash;
pub mod rebuild;
pub mod state;
pub mod verify;
