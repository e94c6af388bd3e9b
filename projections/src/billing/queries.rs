//! How the billing read models are read: a tenant's subscription (its folded
//! state, FREE when it has no row yet), subscriptions across tenants for the
//! platform admin, paying ones for revenue, due transitions for the settle
//! loop, and invoices newest first.

use chrono::{DateTime, Utc};
use coverwatch_domain::ids::TenantId;
use coverwatch_domain::subscription::Subscription;
use sqlx::PgPool;
use sqlx::types::Json;

/// An invoice as Stripe reported it, with the log position that last wrote
/// it (the list's cursor).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct InvoiceRow {
    pub position: i64,
    pub invoice_id: String,
    pub number: Option<String>,
    pub subscription_id: Option<String>,
    pub status: String,
    pub currency: String,
    pub amount_due_cents: i64,
    pub amount_paid_cents: i64,
    pub hosted_invoice_url: Option<String>,
    pub invoice_pdf: Option<String>,
    pub period_start: Option<DateTime<Utc>>,
    pub period_end: Option<DateTime<Utc>>,
    pub recorded_at: DateTime<Utc>,
}

/// The subscription as the read model holds it (FREE when it has no row yet).
pub async fn subscription(pool: &PgPool, tenant_id: TenantId) -> sqlx::Result<Subscription> {
    let row: Option<(Json<Subscription>,)> = sqlx::query_as("SELECT state FROM subscriptions WHERE tenant_id = $1")
        .bind(tenant_id)
        .fetch_optional(pool)
        .await?;
    Ok(row.map(|(state,)| state.0).unwrap_or_default())
}

/// Every tenant's subscription by tenant id, filtered by the recorded tier
/// and status.
pub async fn subscriptions_page(
    pool: &PgPool,
    tier: Option<&str>,
    status: Option<&str>,
    after: Option<TenantId>,
    limit: i64,
) -> sqlx::Result<Vec<(TenantId, Subscription)>> {
    let rows: Vec<(TenantId, Json<Subscription>)> = sqlx::query_as(
        "SELECT tenant_id, state FROM subscriptions
          WHERE ($1::text IS NULL OR tier = $1) AND ($2::text IS NULL OR status = $2)
            AND ($3::uuid IS NULL OR tenant_id > $3)
          ORDER BY tenant_id LIMIT $4",
    )
    .bind(tier)
    .bind(status)
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|(id, state)| (id, state.0)).collect())
}

/// Subscriptions Stripe is charging (active or past due).
pub async fn paying(pool: &PgPool) -> sqlx::Result<Vec<Subscription>> {
    let rows: Vec<(Json<Subscription>,)> = sqlx::query_as(
        "SELECT state FROM subscriptions WHERE status IN ('active', 'past_due') AND stripe_subscription_id IS NOT NULL",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|(state,)| state.0).collect())
}

/// Tenants whose next time-driven transition is due at `now`, oldest first.
pub async fn due_transitions(pool: &PgPool, now: DateTime<Utc>, limit: i64) -> sqlx::Result<Vec<TenantId>> {
    sqlx::query_scalar(
        "SELECT tenant_id FROM subscriptions WHERE next_transition_at <= $1 ORDER BY next_transition_at LIMIT $2",
    )
    .bind(now)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Newest first, strictly before position `before`.
pub async fn invoices_page(
    pool: &PgPool,
    tenant_id: TenantId,
    before: Option<i64>,
    limit: i64,
) -> sqlx::Result<Vec<InvoiceRow>> {
    sqlx::query_as(
        "SELECT position, invoice_id, number, subscription_id, status, currency, amount_due_cents,
                amount_paid_cents, hosted_invoice_url, invoice_pdf, period_start, period_end, recorded_at
           FROM invoices
          WHERE tenant_id = $1 AND ($2::bigint IS NULL OR position < $2)
          ORDER BY position DESC LIMIT $3",
    )
    .bind(tenant_id)
    .bind(before)
    .bind(limit)
    .fetch_all(pool)
    .await
}
