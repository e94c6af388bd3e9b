//! Everything that reads the event log in global order: the subscription
//! runtime (gap-free catch-up with checkpoints kept in the same transaction as
//! the effects) and the read models built by its subscribers.

pub mod audit;
pub mod billing;
pub mod cloud;
pub mod coverage;
pub mod digest;
pub mod directory;
pub mod event;
pub mod kafka;
pub mod runtime;
pub mod signing;

pub use event::StoredEvent;
pub use runtime::{Progress, Subscriber, SubscriptionRuntime};

use std::sync::Arc;

/// The read models: subscribers that can be rebuilt from the log.
pub fn read_models() -> Vec<Arc<dyn Subscriber>> {
    read_models_with(None)
}

/// The read models, the billing one with its seat watcher (which issues
/// commands, so rebuilds go without it).
fn read_models_with(seat_watcher: Option<Arc<dyn billing::SeatWatcher>>) -> Vec<Arc<dyn Subscriber>> {
    vec![
        Arc::new(directory::Directory),
        Arc::new(audit::AuditTrail),
        Arc::new(billing::Billing { watcher: seat_watcher }),
        Arc::new(cloud::Cloud),
        Arc::new(coverage::Coverage),
    ]
}

/// Every subscriber a running Coverwatch has: the read models and the
/// signed digests.
pub fn all_subscribers(
    digests: digest::Digests,
    seat_watcher: Option<Arc<dyn billing::SeatWatcher>>,
) -> Vec<Arc<dyn Subscriber>> {
    let mut subscribers = read_models_with(seat_watcher);
    subscribers.push(Arc::new(digests));
    subscribers
}
