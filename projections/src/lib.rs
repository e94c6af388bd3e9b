//! Everything that reads the event log in global order: the subscription
//! runtime (gap-free catch-up with checkpoints kept in the same transaction as
//! the effects), the read models built by its subscribers, each owning its
//! rows and the queries the API serves from them (`directory`,
//! `audit`, `billing`, `cloud`, `coverage`, `inventory`), and the subscribers that are not
//! read models (signed `digest`s, the `kafka` publisher).

pub mod audit;
pub mod billing;
pub mod cloud;
pub mod coverage;
pub mod digest;
pub mod directory;
pub mod event;
pub mod inventory;
pub mod kafka;
pub mod runtime;
pub mod signing;

pub use event::StoredEvent;
pub use runtime::{Progress, Subscriber, SubscriptionRuntime};

use std::sync::Arc;

/// The read models: subscribers that can be rebuilt from the log.
pub fn read_models() -> Vec<Arc<dyn Subscriber>> {
    vec![
        Arc::new(directory::Directory),
        Arc::new(audit::AuditTrail),
        Arc::new(billing::Billing),
        Arc::new(cloud::Cloud),
        Arc::new(coverage::Coverage),
        Arc::new(inventory::Inventory),
    ]
}

/// The subscribers of this crate a running Coverwatch has: the read models
/// and the signed digests (workflows and the publisher are added by the
/// process that runs them).
pub fn all_subscribers(digests: digest::Digests) -> Vec<Arc<dyn Subscriber>> {
    let mut subscribers = read_models();
    subscribers.push(Arc::new(digests));
    subscribers
}
