//! One-line descriptions of events for people reading the trail.

use serde_json::Value;

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
