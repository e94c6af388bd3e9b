//! The Subscription aggregate's application service: entitlements for every
//! other service's decisions, the FREE subscription every tenant starts
//! with, checkout and portal sessions at Stripe, verified webhooks applied at
//! most once, plan changes (with the usage they must respect), platform
//! admin changes, and settling transitions whose time has come.

use crate::adapters::stripe::{
    CheckoutSession, EventEnvelope, Interpreted, StripeClient, WebhookError, verify_signature,
};
use crate::error::CommandError;
use crate::executor::{CloudAccountsCommands, Committed, RETRIES, SubscriptionCommands, TenantCommands};
use crate::log;
use crate::metadata::CommandMetadata;
use anyhow::Context;
use chrono::{DateTime, Utc};
use coverwatch_domain::clock::Clock;
use coverwatch_domain::ids::TenantId;
use coverwatch_domain::plans::{BillingCycle, Entitlements, PlanCatalog, Tier};
use coverwatch_domain::subscription::{
    StripeFact, Subscription, SubscriptionCommand, SubscriptionError, SubscriptionServices, Usage,
};
use coverwatch_domain::tenant::TenantStatus;
use secrecy::{ExposeSecret, SecretString};
use sqlx::PgPool;
use std::sync::Arc;

pub struct BillingService {
    pub subscriptions: Arc<SubscriptionCommands>,
    /// Loaded for the usage a plan change must respect, and to check that a
    /// tenant exists (from the log, not a read model that may lag).
    pub tenants: Arc<TenantCommands>,
    pub cloud_accounts: Arc<CloudAccountsCommands>,
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
        tenant_id: TenantId,
        committed: Committed,
    },
    /// The event was applied before (or changed nothing).
    AlreadyApplied,
    /// No tenant has this customer: kept for the platform admin.
    Unmatched,
    /// A type Coverwatch does not act on.
    Ignored,
}

impl BillingService {
    /// The services the Subscription aggregate decides with.
    pub fn aggregate_services(
        clock: Arc<dyn Clock>,
        catalog: Arc<PlanCatalog>,
        stripe: Option<&StripeClient>,
    ) -> SubscriptionServices {
        SubscriptionServices {
            clock,
            catalog,
            gateway: stripe
                .cloned()
                .map(|client| Arc::new(client) as Arc<dyn coverwatch_domain::subscription::BillingGateway>),
        }
    }

    /// The subscription as the log has it now (for decisions).
    pub async fn load(&self, tenant_id: TenantId) -> Result<Subscription, CommandError> {
        self.subscriptions.load(tenant_id).await
    }

    /// What the tenant may do right now.
    pub async fn entitlements(&self, tenant_id: TenantId) -> Result<Entitlements, CommandError> {
        Ok(self
            .load(tenant_id)
            .await?
            .entitlements(self.clock.now(), &self.catalog))
    }

    fn stripe(&self) -> Result<&StripeClient, BillingError> {
        self.stripe.as_ref().ok_or(BillingError::NotConfigured)
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "a checkout's parameters, each needed at Stripe"
    )]
    pub async fn checkout(
        &self,
        tenant_id: TenantId,
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

    pub async fn portal(&self, tenant_id: TenantId, return_url: &str) -> Result<String, BillingError> {
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
    pub async fn tenant_of_customer(&self, customer_id: &str) -> Result<Option<TenantId>, CommandError> {
        log::tenant_of_stripe_customer(&self.pool, customer_id)
            .await
            .context("looking up the tenant of a Stripe customer")
            .map_err(CommandError::from)
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
        let due = coverwatch_projections::billing::queries::due_transitions(&self.pool, now, 500)
            .await
            .context("finding due subscription transitions")?;
        let mut changed = 0;
        for tenant_id in due {
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

    /// Creates the tenant's FREE subscription if it is missing (it is
    /// created right after the tenant; this covers a crash in between).
    /// Returns the commit when it created one.
    pub async fn ensure_subscription(&self, tenant_id: TenantId) -> Result<Option<Committed>, CommandError> {
        if self.load(tenant_id).await?.tenant_id.is_some() {
            return Ok(None);
        }
        let create = SubscriptionCommand::Create { tenant_id };
        match self
            .subscriptions
            .execute(tenant_id, create, &CommandMetadata::system(tenant_id))
            .await
        {
            Ok(committed) => Ok(Some(committed)),
            Err(CommandError::Conflict | CommandError::Subscription(SubscriptionError::AlreadyExists)) => Ok(None),
            Err(other) => Err(other),
        }
    }

    /// What the tenant holds now, for plan changes that must not leave it
    /// over the target's limits.
    pub async fn usage(&self, tenant_id: TenantId) -> Result<Usage, CommandError> {
        let now = self.clock.now();
        Ok(Usage {
            accounts: self.cloud_accounts.load(tenant_id).await?.connected(),
            members: self.tenants.load(tenant_id).await?.seats_used(now),
        })
    }

    /// An owner's change of the subscription (plan change, cancellation,
    /// reactivation), decided with the tenant's usage now and decided again
    /// when a concurrent command wins.
    pub async fn owner_change(
        &self,
        tenant_id: TenantId,
        command: impl FnOnce(Usage) -> SubscriptionCommand,
        metadata: &CommandMetadata,
    ) -> Result<Committed, CommandError> {
        self.ensure_subscription(tenant_id).await?;
        let command = command(self.usage(tenant_id).await?);
        self.subscriptions
            .execute_retrying(tenant_id, command, metadata, RETRIES)
            .await
    }

    /// A platform admin's change (overrides, grace, legacy migration) of a
    /// tenant that exists (in the log: a read model may lag behind a tenant
    /// just created).
    pub async fn admin_change(
        &self,
        tenant_id: TenantId,
        command: SubscriptionCommand,
        metadata: &CommandMetadata,
    ) -> Result<Committed, CommandError> {
        let tenant = self.tenants.load(tenant_id).await?;
        if tenant.id.is_none() || tenant.status == TenantStatus::Deleted {
            return Err(coverwatch_domain::tenant::TenantError::NotFound.into());
        }
        self.ensure_subscription(tenant_id).await?;
        self.subscriptions
            .execute_retrying(tenant_id, command, metadata, RETRIES)
            .await
    }

    /// Verified Stripe events for customers no tenant owns, by event id.
    pub async fn unmatched_events(&self, after: Option<&str>, limit: i64) -> Result<Vec<UnmatchedEvent>, CommandError> {
        Ok(sqlx::query_as(
            "SELECT event_id, event_type, customer_id, event_created, received_at FROM stripe_unmatched_events
              WHERE ($1::text IS NULL OR event_id > $1) ORDER BY event_id LIMIT $2",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }
}

/// A verified Stripe event kept because no tenant owns its customer.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UnmatchedEvent {
    pub event_id: String,
    pub event_type: String,
    pub customer_id: String,
    pub event_created: Option<DateTime<Utc>>,
    pub received_at: DateTime<Utc>,
}
