//! The audit trail: one row per event, copied from what the event and its
//! metadata carry, with a short human summary.

use crate::event::StoredEvent;
use crate::runtime::Subscriber;
use async_trait::async_trait;
use serde_json::Value;
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
        self.tenant_id.push(event.tenant_id.unwrap_or_default());
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

/// A one-line description of an event for people reading the trail.
pub fn summarize(event_type: &str, body: &Value) -> String {
    let text = |key: &str| body.get(key).and_then(Value::as_str).unwrap_or("?").to_owned();
    match event_type {
        "TenantCreated" => format!(
            "tenant {} ({}) created by {}",
            text("name"),
            text("slug"),
            text("owner_email")
        ),
        "ProfileUpdated" => {
            let fields: Vec<&str> = body
                .as_object()
                .map(|o| {
                    o.iter()
                        .filter(|(_, v)| !v.is_null())
                        .map(|(k, _)| k.as_str())
                        .collect()
                })
                .unwrap_or_default();
            format!("profile updated: {}", fields.join(", "))
        }
        "TenantDeleted" => "tenant deleted".to_owned(),
        "MemberInvited" => format!("{} invited as {}", text("email"), text("role")),
        "InvitationRevoked" => format!("invitation {} revoked", text("invitation_id")),
        "InvitationAccepted" => format!("{} joined as {}", text("email"), text("role")),
        "MemberRoleChanged" => format!("member {} role {} → {}", text("member_id"), text("from"), text("to")),
        "MemberSuspended" => format!("member {} suspended", text("member_id")),
        "MemberReactivated" => format!("member {} reactivated", text("member_id")),
        "MemberRemoved" => format!("member {} removed", text("member_id")),
        "OwnershipTransferred" => format!(
            "ownership transferred from {} to {}",
            text("from_member_id"),
            text("to_member_id")
        ),
        "ApiKeyCreated" => format!("API key {} created for member {}", text("prefix"), text("member_id")),
        "ApiKeyRevoked" => format!("API key {} revoked", text("key_id")),
        "TenantSuspended" => format!("tenant suspended: {}", text("reason")),
        "TenantReactivated" => "tenant reactivated".to_owned(),
        "SubscriptionCreated" => format!("subscription created on {}", text("tier")),
        "CheckoutStarted" => format!("checkout started for {} ({})", text("tier"), text("cycle")),
        "StripeSubscriptionSynced" => format!(
            "Stripe {}: subscription {}",
            text("stripe_event_type"),
            body.pointer("/state/status").and_then(Value::as_str).unwrap_or("?")
        ),
        "StripeSubscriptionEnded" => format!("Stripe subscription {} ended", text("subscription_id")),
        "InvoiceRecorded" => format!(
            "invoice {} {}",
            body.pointer("/invoice/invoice_id")
                .and_then(Value::as_str)
                .unwrap_or("?"),
            body.pointer("/invoice/status").and_then(Value::as_str).unwrap_or("?")
        ),
        "PlanUpgraded" => format!("plan upgraded from {} to {}", text("from"), text("to")),
        "DowngradeScheduled" => format!(
            "downgrade to {} scheduled",
            body.pointer("/change/to_tier").and_then(Value::as_str).unwrap_or("?")
        ),
        "CancellationScheduled" => format!("cancellation scheduled for {}", text("effective_at")),
        "CancellationWithdrawn" => "cancellation withdrawn".to_owned(),
        "CancellationTookEffect" => format!("period ended after cancellation: {} → FREE", text("from")),
        "OverridesSet" => "plan overrides set by the platform admin".to_owned(),
        "GracePeriodGranted" => format!("grace period until {}: {}", text("until"), text("reason")),
        "LegacyTierMigrated" => format!(
            "migrated from {} with grace until {}",
            text("from"),
            text("grace_until")
        ),
        "LegacyGraceEnded" => format!("legacy grace ended: now {}", text("to")),
        "UsageThresholdCrossed" => format!(
            "{} at {} % of the limit ({} of {})",
            text("metric"),
            body.get("threshold").and_then(Value::as_u64).unwrap_or(0),
            body.get("used").and_then(Value::as_u64).unwrap_or(0),
            body.get("limit").and_then(Value::as_u64).unwrap_or(0)
        ),
        "CloudOrganizationRegistered" => format!(
            "organization {} ({}) registered, role {}",
            text("external_org_id"),
            text("name"),
            text("role_arn")
        ),
        "DiscoveryCompleted" => format!(
            "discovery {}: {} OUs, {} accounts, {} errors",
            text("status"),
            body.get("ous").and_then(Value::as_u64).unwrap_or(0),
            body.get("accounts").and_then(Value::as_u64).unwrap_or(0),
            body.get("errors").and_then(Value::as_array).map_or(0, Vec::len)
        ),
        "OrganizationStatusChanged" => format!("organization status {} → {}", text("from"), text("to")),
        "OrganizationSourceFound" | "OrganizationSourceChanged" | "OrganizationSourceRemoved" => format!(
            "{} source {}",
            body.pointer("/source/detail/kind")
                .or_else(|| body.get("kind"))
                .and_then(Value::as_str)
                .unwrap_or("?"),
            body.pointer("/source/id")
                .or_else(|| body.get("id"))
                .and_then(Value::as_str)
                .unwrap_or("?")
        ),
        "MemberConnectionFailed" => format!(
            "member {} could not be connected: {}",
            text("account_id"),
            text("reason")
        ),
        "DetectionRegistered" => format!(
            "detection {} registered ({}, {} techniques, {} scope)",
            text("name"),
            text("source"),
            body.get("techniques").and_then(Value::as_object).map_or(0, |t| t.len()),
            body.pointer("/scope/type").and_then(Value::as_str).unwrap_or("?")
        ),
        "DetectionUpdated" => format!(
            "detection {} now has {} techniques",
            text("name"),
            body.get("techniques").and_then(Value::as_object).map_or(0, |t| t.len())
        ),
        "DetectionScopeChanged" => format!(
            "detection scope {} → {}",
            body.pointer("/from/type").and_then(Value::as_str).unwrap_or("?"),
            body.pointer("/to/type").and_then(Value::as_str).unwrap_or("?")
        ),
        other => other.to_owned(),
    }
}
