//! Billing read models: the subscription of each tenant (with its folded
//! state, so entitlements are computed at query time by the domain's own
//! function), its invoices, the seats the usage meter counts, and the usage
//! thresholds recorded in the log. `queries` reads them; `usage` composes
//! the usage report from them and the other read models, and meters API
//! requests. The 80 % / 100 % watcher is a workflow of its own (it issues
//! commands), never part of this subscriber.

pub mod queries;
pub mod usage;

pub use queries::InvoiceRow;

use crate::event::StoredEvent;
use crate::runtime::Subscriber;
use async_trait::async_trait;
use coverwatch_domain::ids::TenantId;
use coverwatch_domain::subscription::{Subscription, SubscriptionEvent};
use coverwatch_domain::tenant::TenantEvent;
use cqrs_es::Aggregate;
use sqlx::PgConnection;
use std::collections::BTreeMap;
use uuid::Uuid;

const SEAT_EVENTS: [&str; 5] = [
    "TenantCreated",
    "MemberInvited",
    "InvitationRevoked",
    "InvitationAccepted",
    "MemberRemoved",
];

pub struct Billing;

#[async_trait]
impl Subscriber for Billing {
    fn name(&self) -> &'static str {
        "billing"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["subscriptions", "invoices", "usage_seats", "usage_thresholds"]
    }

    /// Subscriptions, invoices and usage answer right after a command.
    fn awaited(&self) -> bool {
        true
    }

    async fn handle(&self, conn: &mut PgConnection, events: &[StoredEvent]) -> anyhow::Result<()> {
        let mut states: BTreeMap<TenantId, (Subscription, i64)> = BTreeMap::new();
        let mut dirty = BTreeMap::new();
        for event in events {
            let Ok(tenant_id) = event.aggregate_id.parse::<TenantId>() else {
                continue;
            };
            match event.aggregate_type.as_str() {
                "subscription" => {
                    if let std::collections::btree_map::Entry::Vacant(slot) = states.entry(tenant_id) {
                        let row: Option<(sqlx::types::Json<Subscription>, i64)> =
                            sqlx::query_as("SELECT state, version FROM subscriptions WHERE tenant_id = $1")
                                .bind(tenant_id)
                                .fetch_optional(&mut *conn)
                                .await?;
                        slot.insert(row.map(|(state, version)| (state.0, version)).unwrap_or_default());
                    }
                    let (state, version) = states.get_mut(&tenant_id).expect("loaded above");
                    // Already folded (a replay over rows written before).
                    if event.sequence <= *version {
                        continue;
                    }
                    let decoded: SubscriptionEvent = event.decode()?;
                    record_side_rows(conn, tenant_id, event, &decoded).await?;
                    state.apply(decoded);
                    *version = event.sequence;
                    dirty.insert(tenant_id, event.recorded_at);
                }
                // Only the events that move seats are decoded: a catch-up
                // over a long log is mostly other tenant events.
                "tenant" if SEAT_EVENTS.contains(&event.event_type.as_str()) => {
                    let decoded: TenantEvent = event.decode()?;
                    update_seats(conn, tenant_id, &decoded).await?;
                }
                _ => {}
            }
        }
        for (tenant_id, updated_at) in dirty {
            let (state, version) = &states[&tenant_id];
            upsert_subscription(conn, tenant_id, state, *version, updated_at).await?;
        }
        Ok(())
    }
}

async fn record_side_rows(
    conn: &mut PgConnection,
    tenant_id: TenantId,
    event: &StoredEvent,
    decoded: &SubscriptionEvent,
) -> anyhow::Result<()> {
    match decoded {
        SubscriptionEvent::InvoiceRecorded { invoice, .. } => {
            sqlx::query(
                "INSERT INTO invoices (tenant_id, invoice_id, number, subscription_id, status, currency,
                        amount_due_cents, amount_paid_cents, hosted_invoice_url, invoice_pdf, period_start,
                        period_end, position, recorded_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
                 ON CONFLICT (tenant_id, invoice_id) DO UPDATE SET
                    number = excluded.number, subscription_id = excluded.subscription_id,
                    status = excluded.status, currency = excluded.currency,
                    amount_due_cents = excluded.amount_due_cents, amount_paid_cents = excluded.amount_paid_cents,
                    hosted_invoice_url = excluded.hosted_invoice_url, invoice_pdf = excluded.invoice_pdf,
                    period_start = excluded.period_start, period_end = excluded.period_end,
                    position = excluded.position, recorded_at = excluded.recorded_at
                 WHERE invoices.position < excluded.position",
            )
            .bind(tenant_id)
            .bind(&invoice.invoice_id)
            .bind(&invoice.number)
            .bind(&invoice.subscription_id)
            .bind(&invoice.status)
            .bind(&invoice.currency)
            .bind(invoice.amount_due_cents)
            .bind(invoice.amount_paid_cents)
            .bind(&invoice.hosted_invoice_url)
            .bind(&invoice.invoice_pdf)
            .bind(invoice.period_start)
            .bind(invoice.period_end)
            .bind(event.position)
            .bind(event.recorded_at)
            .execute(&mut *conn)
            .await?;
        }
        SubscriptionEvent::UsageThresholdCrossed {
            metric,
            threshold,
            used,
            limit,
            period_start,
        } => {
            sqlx::query(
                "INSERT INTO usage_thresholds (tenant_id, metric, threshold, period_start, used, limit_value, recorded_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
            )
            .bind(tenant_id)
            .bind(metric)
            .bind(i16::from(*threshold))
            .bind(period_start)
            .bind(*used as i64)
            .bind(*limit as i64)
            .bind(event.recorded_at)
            .execute(&mut *conn)
            .await?;
        }
        _ => {}
    }
    Ok(())
}

/// Keeps `usage_seats` in step with the Tenant's members and invitations;
/// returns whether a seat was taken. Every statement is idempotent.
async fn update_seats(conn: &mut PgConnection, tenant_id: TenantId, event: &TenantEvent) -> anyhow::Result<()> {
    let take = |seat: Uuid, kind: &'static str, expires_at: Option<chrono::DateTime<chrono::Utc>>| {
        sqlx::query(
            "INSERT INTO usage_seats (tenant_id, seat_id, kind, expires_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT DO NOTHING",
        )
        .bind(tenant_id)
        .bind(seat)
        .bind(kind)
        .bind(expires_at)
    };
    let free = |seat: Uuid| {
        sqlx::query("DELETE FROM usage_seats WHERE tenant_id = $1 AND seat_id = $2")
            .bind(tenant_id)
            .bind(seat)
    };
    match event {
        TenantEvent::TenantCreated { owner_member_id, .. } => {
            take(owner_member_id.as_uuid(), "member", None)
                .execute(&mut *conn)
                .await?;
        }
        TenantEvent::MemberInvited {
            invitation_id,
            expires_at,
            ..
        } => {
            take(invitation_id.as_uuid(), "invitation", Some(*expires_at))
                .execute(&mut *conn)
                .await?;
        }
        TenantEvent::InvitationRevoked { invitation_id } => {
            free(invitation_id.as_uuid()).execute(&mut *conn).await?;
        }
        TenantEvent::InvitationAccepted {
            invitation_id,
            member_id,
            ..
        } => {
            free(invitation_id.as_uuid()).execute(&mut *conn).await?;
            take(member_id.as_uuid(), "member", None).execute(&mut *conn).await?;
        }
        TenantEvent::MemberRemoved { member_id } => {
            free(member_id.as_uuid()).execute(&mut *conn).await?;
        }
        _ => {}
    }
    Ok(())
}

async fn upsert_subscription(
    conn: &mut PgConnection,
    tenant_id: TenantId,
    state: &Subscription,
    version: i64,
    updated_at: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<()> {
    let cycle = state.cycle.map(|cycle| match cycle {
        coverwatch_domain::plans::BillingCycle::Monthly => "monthly",
        coverwatch_domain::plans::BillingCycle::Annual => "annual",
    });
    sqlx::query(
        "INSERT INTO subscriptions (tenant_id, tier, status, cycle, stripe_customer_id, stripe_subscription_id,
                amount_cents, current_period_start, current_period_end, cancel_at_period_end, trial_end,
                next_transition_at, state, version, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
         ON CONFLICT (tenant_id) DO UPDATE SET
            tier = excluded.tier, status = excluded.status, cycle = excluded.cycle,
            stripe_customer_id = excluded.stripe_customer_id,
            stripe_subscription_id = excluded.stripe_subscription_id, amount_cents = excluded.amount_cents,
            current_period_start = excluded.current_period_start,
            current_period_end = excluded.current_period_end,
            cancel_at_period_end = excluded.cancel_at_period_end, trial_end = excluded.trial_end,
            next_transition_at = excluded.next_transition_at, state = excluded.state,
            version = excluded.version, updated_at = excluded.updated_at
         WHERE subscriptions.version < excluded.version",
    )
    .bind(tenant_id)
    .bind(state.tier.as_str())
    .bind(state.status.as_str())
    .bind(cycle)
    .bind(&state.stripe_customer_id)
    .bind(&state.stripe_subscription_id)
    .bind(state.amount_cents.map(|cents| cents as i64))
    .bind(state.current_period_start)
    .bind(state.current_period_end)
    .bind(state.cancel_at_period_end)
    .bind(state.trial_end)
    .bind(state.next_transition_at())
    .bind(sqlx::types::Json(state))
    .bind(version)
    .bind(updated_at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
