//! Lookups in the event log itself, for decisions that must not wait for a
//! read model (the log is the write side: what it holds is final).

use coverwatch_domain::ids::{DetectionId, OrganizationId, TenantId};
use sqlx::{PgConnection, PgPool};

/// The tenant whose subscription linked this Stripe customer.
pub async fn tenant_of_stripe_customer(pool: &PgPool, customer_id: &str) -> sqlx::Result<Option<TenantId>> {
    let row: Option<(String,)> = sqlx::query_as(
        "SELECT aggregate_id FROM events
          WHERE event_type = 'StripeCustomerLinked'
            AND (payload -> 'StripeCustomerLinked' ->> 'customer_id') = $1
          ORDER BY position DESC LIMIT 1",
    )
    .bind(customer_id)
    .fetch_optional(pool)
    .await?;
    Ok(row.and_then(|(id,)| id.parse().ok()))
}

/// The newest detection registered for an organization source.
pub async fn derived_detection_of_source(
    conn: &mut PgConnection,
    organization_id: OrganizationId,
    source_id: &str,
) -> sqlx::Result<Option<DetectionId>> {
    let id: Option<String> = sqlx::query_scalar(
        "SELECT aggregate_id FROM events
          WHERE event_type = 'DetectionRegistered'
            AND (payload -> 'DetectionRegistered' -> 'derived_from' ->> 'source_id') = $1
            AND (payload -> 'DetectionRegistered' -> 'derived_from' ->> 'organization_id') = $2
          ORDER BY position DESC LIMIT 1",
    )
    .bind(source_id)
    .bind(organization_id.to_string())
    .fetch_optional(conn)
    .await?;
    Ok(id.and_then(|id| id.parse().ok()))
}
