//! The audit trail: one row per event, copied from what the event and its
//! metadata carry, with a short human summary (`summary`). `queries` reads
//! it a page at a time or as a stream for exports.

pub mod queries;
mod summary;

pub use queries::AuditRow;
pub use summary::summarize;

use crate::event::StoredEvent;
use crate::runtime::Subscriber;
use async_trait::async_trait;
use sqlx::PgConnection;

pub struct AuditTrail;

#[async_trait]
impl Subscriber for AuditTrail {
    fn name(&self) -> &'static str {
        "audit_trail"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["audit_log"]
    }

    /// The audit log answers right after the command that wrote it.
    fn awaited(&self) -> bool {
        true
    }

    async fn handle(&self, conn: &mut PgConnection, events: &[StoredEvent]) -> anyhow::Result<()> {
        let mut columns = AuditColumns::default();
        for event in events {
            columns.push(event);
        }
        // ON CONFLICT DO NOTHING: replaying an event over its own row is a no-op.
        sqlx::query(
            "INSERT INTO audit_log (position, event_id, recorded_at, tenant_id, actor, action, resource_type,
                    resource_id, request_id, correlation_id, causation_id, client_ip, user_agent,
                    impersonated_by, summary)
             SELECT * FROM UNNEST($1::bigint[], $2::uuid[], $3::timestamptz[], $4::uuid[], $5::text[],
                    $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[],
                    $13::text[], $14::text[], $15::text[])
             ON CONFLICT (tenant_id, position) DO NOTHING",
        )
        .bind(columns.position)
        .bind(columns.event_id)
        .bind(columns.recorded_at)
        .bind(columns.tenant_id)
        .bind(columns.actor)
        .bind(columns.action)
        .bind(columns.resource_type)
        .bind(columns.resource_id)
        .bind(columns.request_id)
        .bind(columns.correlation_id)
        .bind(columns.causation_id)
        .bind(columns.client_ip)
        .bind(columns.user_agent)
        .bind(columns.impersonated_by)
        .bind(columns.summary)
        .execute(conn)
        .await?;
        Ok(())
    }
}

#[derive(Default)]
struct AuditColumns {
    position: Vec<i64>,
    event_id: Vec<uuid::Uuid>,
    recorded_at: Vec<chrono::DateTime<chrono::Utc>>,
    tenant_id: Vec<uuid::Uuid>,
    actor: Vec<String>,
    action: Vec<String>,
    resource_type: Vec<String>,
    resource_id: Vec<String>,
    request_id: Vec<String>,
    correlation_id: Vec<String>,
    causation_id: Vec<String>,
    client_ip: Vec<Option<String>>,
    user_agent: Vec<Option<String>>,
    impersonated_by: Vec<Option<String>>,
    summary: Vec<String>,
}

impl AuditColumns {
    fn push(&mut self, event: &StoredEvent) {
        let meta = |key: &str| event.meta(key).map(str::to_owned);
        self.position.push(event.position);
        self.event_id.push(event.event_id);
        self.recorded_at.push(event.recorded_at);
        // The log refuses events without a tenant; the nil id is a guard only.
        self.tenant_id.push(event.tenant_id.map(Into::into).unwrap_or_default());
        self.actor.push(meta("actor").unwrap_or_default());
        self.action.push(event.event_type.clone());
        self.resource_type.push(event.aggregate_type.clone());
        self.resource_id.push(event.aggregate_id.clone());
        self.request_id.push(meta("request_id").unwrap_or_default());
        self.correlation_id.push(meta("correlation_id").unwrap_or_default());
        self.causation_id.push(meta("causation_id").unwrap_or_default());
        self.client_ip.push(meta("client_ip"));
        self.user_agent.push(meta("user_agent"));
        self.impersonated_by.push(meta("impersonated_by"));
        self.summary.push(summarize(&event.event_type, event.body()));
    }
}
