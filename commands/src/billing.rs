//! Billing operations that span Stripe and the Subscription aggregate:
//! checkout and portal sessions, verified webhooks applied at most once,
//! entitlements for decisions, and settling transitions whose time has come.

use crate::error::CommandError;
use crate::executor::{Committed, SubscriptionCommands};
use crate::metadata::CommandMetadata;
use crate::stripe::{CheckoutSession, EventEnvelope, Interpreted, StripeClient, WebhookError, verify_signature};
use anyhow::Context;
use chrono::{DateTime, Utc};
use coverwatch_domain::clock::Clock;
use coverwatch_domain::plans::{BillingCycle, Entitlements, PlanCatalog, Tier};
use coverwatch_domain::subscription::{StripeFact, Subscription, SubscriptionCommand, SubscriptionError};
use secrecy::{ExposeSecret, SecretString};
use sqlx::PgPool;
use std::sync::Arc;
use uuid::Uuid;

/// How often a command decided on a stale aggregate is decided again.
pub const RETRIES: usize = 25;

pub struct Billing {
    pub subscriptions: Arc<SubscriptionCommands>,
    pub catalog: Arc<PlanCatalog>,
    pub stripe: Option<StripeClient>,
    pub webhook_secret: Option<SecretString>,
    pub clock: Arc<dyn Clock>,
    pub pool: PgPool,
}

#[derive(Debug, thiserror::Error)]
pub enum BillingError {
    #[error("billing is not configured on this server")]
    NotConfigured,
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error(transparent)]
    Webhook(#[from] WebhookError),
    /// Stripe could not be reached or refused: the caller may retry.
    #[error("Stripe is unavailable: {0}")]
    Upstream(String),
}

impl From<SubscriptionError> for BillingError {
    fn from(error: SubscriptionError) -> Self {
        Self::Command(error.into())
    }
}

/// What happened to one webhook delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookOutcome {
    Applied {
        tenant_id: Uuid,
        committed: Committed,
    },
    /// The event was applied before (or changed nothing).
    AlreadyApplied,
    /// No tenant has this customer: kept for the platform admin.
    Unmatched,
    /// A type Coverwatch does not act on.
    Ignored,
}

impl Billing {
    /// The subscription as the log has it now (for decisions).
    pub async fn load(&self, tenant_id: Uuid) -> Result<Subscription, CommandError> {
        self.subscriptions.load(tenant_id).await
    }

    /// What the tenant may do right now.
    pub async fn entitlements(&self, tenant_id: Uuid) -> Result<Entitlements, CommandError> {
        Ok(self
            .load(tenant_id)
            .await?
            .entitlements(self.clock.now(), &self.catalog))
    }

    fn stripe(&self) -> Result<&StripeClient, BillingError> {
        self.stripe.as_ref().ok_or(BillingError::NotConfigured)
    }

    #[allow(clippy::too_many_arguments)]
    pub async fn checkout(
        &self,
        tenant_id: Uuid,
        tenant_name: &str,
        billing_email: Option<&str>,
        tier: Tier,
        cycle: BillingCycle,
        success_url: &str,
        cancel_url: &str,
        metadata: &CommandMetadata,
    ) -> Result<(CheckoutSession, Committed), BillingError> {
        let plan = self.catalog.plan(tier);
        if !plan.purchasable() {
            return Err(SubscriptionError::Rule(format!("the {tier} tier cannot be bought")).into());
        }
        let stripe = self.stripe()?;
        let price_id = plan
            .stripe_price(cycle)
            .ok_or_else(|| SubscriptionError::Rule(format!("{tier} has no price for this cycle")))?;
        let current = self.load(tenant_id).await?;
        // Before any Stripe object is created; the aggregate decides the same.
        if current.has_paid_subscription() {
            return Err(SubscriptionError::Conflict(
                "the tenant already has a paid subscription: change plan instead".into(),
            )
            .into());
        }
        let customer_id = match current.stripe_customer_id {
            Some(id) => id,
            None => stripe
                .create_customer(tenant_id, tenant_name, billing_email)
                .await
                .map_err(|e| BillingError::Upstream(e.to_string()))?,
        };
        let session = stripe
            .create_checkout_session(tenant_id, &customer_id, price_id, tier, cycle, success_url, cancel_url)
            .await
            .map_err(|e| BillingError::Upstream(e.to_string()))?;
        let command = SubscriptionCommand::StartCheckout {
            tier,
            cycle,
            session_id: session.id.clone(),
            customer_id,
        };
        let committed = self
            .subscriptions
            .execute_retrying(tenant_id, command, metadata, RETRIES)
            .await?;
        Ok((session, committed))
    }

    pub async fn portal(&self, tenant_id: Uuid, return_url: &str) -> Result<String, BillingError> {
        let stripe = self.stripe()?;
        let Some(customer_id) = self.load(tenant_id).await?.stripe_customer_id else {
            return Err(SubscriptionError::Rule(
                "the tenant has no billing account yet: start a checkout first".into(),
            )
            .into());
        };
        stripe
            .create_portal_session(&customer_id, return_url)
            .await
            .map_err(|e| BillingError::Upstream(e.to_string()))
    }

    /// Verifies, parses and applies one webhook delivery. Nothing is parsed
    /// before the signature is checked.
    pub async fn webhook(&self, signature: Option<&str>, body: &[u8]) -> Result<WebhookOutcome, BillingError> {
        let secret = self.webhook_secret.as_ref().ok_or(BillingError::NotConfigured)?;
        let signature = signature.ok_or(WebhookError::MissingSignature)?;
        verify_signature(signature, body, secret.expose_secret(), Utc::now())?;
        let envelope = EventEnvelope::parse(body)?;
        let interpreted = envelope.interpret(&self.catalog)?;
        let customer_id = match &interpreted {
            Interpreted::Ignored => return Ok(WebhookOutcome::Ignored),
            Interpreted::Apply { customer_id, .. } | Interpreted::CheckoutCompleted { customer_id, .. } => {
                customer_id.clone()
            }
        };
        let Some(tenant_id) = self.tenant_of_customer(&customer_id).await? else {
            self.keep_unmatched(&envelope, &customer_id, body).await?;
            return Ok(WebhookOutcome::Unmatched);
        };
        let change = match interpreted {
            Interpreted::Ignored => unreachable!("returned above"),
            Interpreted::Apply { change, .. } => change,
            Interpreted::CheckoutCompleted {
                session_id,
                subscription_id,
                ..
            } => {
                // The session names the subscription; its state is Stripe's.
                let subscription = self
                    .stripe()?
                    .retrieve_subscription(&subscription_id)
                    .await
                    .map_err(|e| BillingError::Upstream(e.to_string()))?
                    .to_state(&self.catalog)?;
                envelope.change(StripeFact::CheckoutCompleted {
                    session_id,
                    customer_id,
                    subscription,
                })?
            }
        };
        let metadata = CommandMetadata {
            actor: "stripe".into(),
            causation_id: change.event_id.clone(),
            ..CommandMetadata::system(tenant_id)
        };
        // Concurrent deliveries of one event: the loser decides again, sees
        // the id applied, and appends nothing.
        let committed = self
            .subscriptions
            .execute_retrying(
                tenant_id,
                SubscriptionCommand::ApplyStripeEvent(change),
                &metadata,
                RETRIES,
            )
            .await?;
        Ok(if committed.position == 0 {
            WebhookOutcome::AlreadyApplied
        } else {
            WebhookOutcome::Applied { tenant_id, committed }
        })
    }

    /// The tenant whose subscription linked this Stripe customer, read from
    /// the event log itself (no read-model lag).
    pub async fn tenant_of_customer(&self, customer_id: &str) -> Result<Option<Uuid>, CommandError> {
        let row: Option<(String,)> = sqlx::query_as(
            "SELECT aggregate_id FROM events
              WHERE event_type = 'StripeCustomerLinked'
                AND (payload -> 'StripeCustomerLinked' ->> 'customer_id') = $1
              ORDER BY position DESC LIMIT 1",
        )
        .bind(customer_id)
        .fetch_optional(&self.pool)
        .await
        .context("looking up the tenant of a Stripe customer")?;
        Ok(row.and_then(|(id,)| id.parse().ok()))
    }

    async fn keep_unmatched(&self, event: &EventEnvelope, customer_id: &str, body: &[u8]) -> Result<(), CommandError> {
        let payload: serde_json::Value = serde_json::from_slice(body).context("re-reading a verified webhook body")?;
        sqlx::query(
            "INSERT INTO stripe_unmatched_events (event_id, event_type, customer_id, event_created, payload)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (event_id) DO NOTHING",
        )
        .bind(&event.id)
        .bind(&event.kind)
        .bind(customer_id)
        .bind(event.created_at().ok())
        .bind(payload)
        .execute(&self.pool)
        .await
        .context("keeping an unmatched Stripe event")?;
        Ok(())
    }

    /// Records every transition that is due at `now` (period ends, grace
    /// ends); returns how many subscriptions changed.
    pub async fn settle_due(&self, now: DateTime<Utc>) -> Result<usize, CommandError> {
        let due: Vec<(Uuid,)> = sqlx::query_as(
            "SELECT tenant_id FROM subscriptions WHERE next_transition_at <= $1 ORDER BY next_transition_at LIMIT 500",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await
        .context("finding due subscription transitions")?;
        let mut changed = 0;
        for (tenant_id,) in due {
            let committed = self
                .subscriptions
                .execute_retrying(
                    tenant_id,
                    SubscriptionCommand::Settle,
                    &CommandMetadata::system(tenant_id),
                    RETRIES,
                )
                .await?;
            changed += usize::from(committed.position != 0);
        }
        Ok(changed)
    }
}
