//! How an aggregate hands its decided events to cqrs-es.
//!
//! cqrs-es 0.5's `EventSink::write` applies each event to the aggregate it
//! is given, and when the commit reaches a snapshot point it folds the
//! commit's events once more into that same aggregate for the snapshot: an
//! aggregate written through directly would be snapshotted with the
//! commit's events applied twice (a version one too high, counters off).
//! So events go through a copy; the loaded aggregate stays as the log had
//! it before the command, and the snapshot folds each event once.

use cqrs_es::Aggregate;
use cqrs_es::event_sink::EventSink;

/// Writes `events` to the sink; returns the state after them.
pub async fn emit<A>(aggregate: &A, sink: &EventSink<A>, events: impl IntoIterator<Item = A::Event>) -> A
where
    A: Aggregate + Clone,
{
    let mut after = aggregate.clone();
    for event in events {
        sink.write(event, &mut after).await;
    }
    after
}
