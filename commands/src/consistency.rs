//! Read-your-writes: after a command, wait until the read models (and the
//! workflows commands wait for) show its commit, so the caller's next query
//! sees it. Bounded: a commit the read models have not reached in time is
//! still committed; the wait only gives up.

use crate::executor::Committed;
use coverwatch_projections::Progress;
use std::time::Duration;

#[derive(Clone)]
pub struct ReadModels {
    progress: Progress,
    wait: Duration,
}

impl ReadModels {
    pub fn new(progress: Progress, wait: Duration) -> Self {
        Self { progress, wait }
    }

    /// Waits (up to the configured bound) until every awaited subscriber has
    /// processed the commit; returns whether they all got there.
    pub async fn settle(&self, committed: Committed) -> bool {
        let reached = self.progress.wait_for(committed.position, self.wait).await;
        if !reached {
            tracing::warn!(position = committed.position, "read models did not catch up in time");
        }
        reached
    }
}
