//! Everything that reads the event log in global order: the subscription
//! runtime (gap-free catch-up with checkpoints kept in the same transaction as
//! the effects) and the read models built by its subscribers.

pub mod audit;
pub mod directory;
pub mod event;
pub mod runtime;

pub use event::StoredEvent;
pub use runtime::{Progress, Subscriber, SubscriptionRuntime};

use std::sync::Arc;

/// Every read-model subscriber, in the order they are run.
pub fn all_subscribers() -> Vec<Arc<dyn Subscriber>> {
    vec![Arc::new(directory::Directory), Arc::new(audit::AuditTrail)]
}
