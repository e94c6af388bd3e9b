//! Rebuild read models from position 0: empty the subscriber's tables, reset
//! its checkpoint and catch up. (In place: issue-level blue/green switching is
//! later work.)

use coverwatch_projections::runtime::{Subscriber, SubscriptionRuntime};
use sqlx::PgPool;
use std::sync::Arc;

pub async fn rebuild(pool: &PgPool, subscribers: Vec<Arc<dyn Subscriber>>, batch_size: i64) -> anyhow::Result<u64> {
    let mut tx = pool.begin().await?;
    for subscriber in &subscribers {
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('coverwatch.subscriber.' || $1))")
            .bind(subscriber.name())
            .execute(&mut *tx)
            .await?;
        for table in subscriber.tables() {
            sqlx::query(&format!("TRUNCATE {table}")).execute(&mut *tx).await?;
        }
        sqlx::query(
            "INSERT INTO subscriber_checkpoints (name) VALUES ($1)
             ON CONFLICT (name) DO UPDATE SET position = 0, events_processed = 0, updated_at = now()",
        )
        .bind(subscriber.name())
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    let runtime = SubscriptionRuntime::new(pool.clone(), subscribers, batch_size).await?;
    runtime.catch_up().await
}
