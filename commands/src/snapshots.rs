//! Aggregate snapshots that cannot override the log. Snapshots spare a
//! command the fold of a long history, but unlike events they are not
//! hash-chained: whoever can write the table could make a decision start
//! from a state the log never had. So each snapshot is sealed with an
//! HMAC under a server key (derived from the audit signing key) over the
//! aggregate, its sequence and the exact state text; a snapshot whose seal
//! does not hold is not used: the aggregate is folded from its first event
//! (and the next snapshot replaces it). Wraps postgres-es's repository; the
//! events pass through untouched.

use cqrs_es::Aggregate;
use cqrs_es::persist::{PersistedEventRepository, PersistenceError, ReplayStream, SerializedEvent, SerializedSnapshot};
use hmac::{Hmac, Mac};
use postgres_es::PostgresEventRepository;
use serde_json::{Value, json};
use sha2::Sha256;

/// The key snapshots are sealed with.
#[derive(Clone)]
pub struct SnapshotKey([u8; 32]);

impl SnapshotKey {
    pub fn new(key: [u8; 32]) -> Self {
        Self(key)
    }

    fn seal(&self, aggregate_type: &str, aggregate_id: &str, sequence: usize, state: &str) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("any key length");
        for part in [aggregate_type, aggregate_id, &sequence.to_string(), state] {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part.as_bytes());
        }
        hex::encode(mac.finalize().into_bytes())
    }
}

/// postgres-es's repository, with sealed snapshots.
pub struct SealedSnapshots {
    inner: PostgresEventRepository,
    key: SnapshotKey,
    /// cqrs-es's snapshot interval (`new_snapshot_store`).
    every: usize,
}

impl SealedSnapshots {
    pub fn new(inner: PostgresEventRepository, key: SnapshotKey, every: usize) -> Self {
        Self {
            inner,
            key,
            every: every.max(1),
        }
    }

    /// Whether cqrs-es's snapshot for a commit of `count` events after
    /// `current` holds all of them. When a commit crosses a snapshot point
    /// with events to spare, cqrs-es folds the snapshot only up to that
    /// point while postgres-es records it at the commit's last event, so a
    /// load would skip the events in between (cqrs-es 0.5, postgres-es
    /// 0.5): such a snapshot is not written (the previous one stays).
    fn covers_the_commit(&self, current: usize, count: usize) -> bool {
        let next = self.every - (current % self.every);
        count >= next && (count - next).is_multiple_of(self.every)
    }
}

impl PersistedEventRepository for SealedSnapshots {
    async fn get_events<A: Aggregate>(&self, aggregate_id: &str) -> Result<Vec<SerializedEvent>, PersistenceError> {
        self.inner.get_events::<A>(aggregate_id).await
    }

    async fn get_last_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
        last_sequence: usize,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        self.inner.get_last_events::<A>(aggregate_id, last_sequence).await
    }

    async fn get_snapshot<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Option<SerializedSnapshot>, PersistenceError> {
        let Some(mut snapshot) = self.inner.get_snapshot::<A>(aggregate_id).await? else {
            return Ok(None);
        };
        let sealed = (|| {
            let state = snapshot.aggregate.get("state")?.as_str()?;
            let seal = snapshot.aggregate.get("seal")?.as_str()?;
            let expected = self.key.seal(A::TYPE, aggregate_id, snapshot.current_sequence, state);
            // Constant time: the seal is a secret's output.
            let same = expected.len() == seal.len()
                && expected
                    .bytes()
                    .zip(seal.bytes())
                    .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                    == 0;
            same.then(|| serde_json::from_str::<Value>(state).ok()).flatten()
        })();
        match sealed {
            Some(state) => snapshot.aggregate = state,
            None => {
                tracing::warn!(
                    aggregate_type = A::TYPE,
                    aggregate_id,
                    "an aggregate snapshot's seal does not hold: folding the aggregate from its events"
                );
                // From the first event; the snapshot's version is kept so the
                // next snapshot replaces this one.
                snapshot.aggregate =
                    serde_json::to_value(A::default()).map_err(|e| PersistenceError::UnknownError(Box::new(e)))?;
                snapshot.current_sequence = 0;
            }
        }
        Ok(Some(snapshot))
    }

    async fn persist<A: Aggregate>(
        &self,
        events: &[SerializedEvent],
        snapshot_update: Option<(String, Value, usize)>,
    ) -> Result<(), PersistenceError> {
        let (Some(first), Some(last)) = (events.first(), events.last()) else {
            return self.inner.persist::<A>(events, None).await;
        };
        let current = first.sequence.saturating_sub(1);
        let snapshot_update = snapshot_update
            .filter(|_| self.covers_the_commit(current, events.len()))
            .map(|(aggregate_id, state, current_snapshot)| {
                // postgres-es records the snapshot at the commit's last event.
                let state = state.to_string();
                let seal = self.key.seal(A::TYPE, &aggregate_id, last.sequence, &state);
                (aggregate_id, json!({"state": state, "seal": seal}), current_snapshot)
            });
        self.inner.persist::<A>(events, snapshot_update).await
    }

    async fn stream_events<A: Aggregate>(&self, aggregate_id: &str) -> Result<ReplayStream, PersistenceError> {
        self.inner.stream_events::<A>(aggregate_id).await
    }

    async fn stream_all_events<A: Aggregate>(&self) -> Result<ReplayStream, PersistenceError> {
        self.inner.stream_all_events::<A>().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealed(every: usize) -> SealedSnapshots {
        let pool = sqlx::PgPool::connect_lazy("postgres://nobody@127.0.0.1:1/none").expect("a lazy pool");
        SealedSnapshots::new(PostgresEventRepository::new(pool), SnapshotKey::new([7; 32]), every)
    }

    #[tokio::test]
    async fn a_snapshot_is_written_only_when_it_holds_the_whole_commit() {
        let store = sealed(20);
        assert!(store.covers_the_commit(19, 1), "one event reaching the point");
        assert!(store.covers_the_commit(18, 2));
        assert!(!store.covers_the_commit(19, 2), "the point, then one more event");
        assert!(store.covers_the_commit(19, 21), "the point and a whole interval more");
        assert!(!store.covers_the_commit(0, 19), "no point reached (cqrs-es takes none)");
    }

    #[test]
    fn the_seal_binds_the_aggregate_its_sequence_and_its_state() {
        let key = SnapshotKey::new([7; 32]);
        let seal = key.seal("tenant", "t1", 20, "{}");
        assert_eq!(seal, key.seal("tenant", "t1", 20, "{}"));
        for other in [
            key.seal("subscription", "t1", 20, "{}"),
            key.seal("tenant", "t2", 20, "{}"),
            key.seal("tenant", "t1", 21, "{}"),
            key.seal("tenant", "t1", 20, "{ }"),
            SnapshotKey::new([8; 32]).seal("tenant", "t1", 20, "{}"),
        ] {
            assert_ne!(seal, other);
        }
    }
}
