//! The Tenant aggregate's application service: sign-up (with the owner's
//! key), invitations and their acceptance against
//! the plan's member limit (decided again when a concurrent command wins),
//! API keys, and every other tenant command as the caller built it.

use crate::error::CommandError;
use crate::executor::{Committed, RETRIES, TenantCommands};
use crate::idempotency::fresh_id;
use crate::metadata::CommandMetadata;
use crate::secrets::{api_key_display_prefix, new_api_key, new_invitation_token, parse_invitation_token, sha256_hex};
use crate::services::billing::BillingService;
use chrono::{DateTime, Duration, Utc};
use coverwatch_domain::clock::Clock;
use coverwatch_domain::ids::{ApiKeyId, InvitationId, MemberId, TenantId};
use coverwatch_domain::tenant::{
    Actor, NewApiKey, ParentTenant, Tenant, TenantCommand, TenantError, TenantStatus, Versioned,
};
use coverwatch_domain::values::{Email, Label, Name, Role, Slug};
use std::sync::Arc;

pub struct TenantService {
    pub commands: Arc<TenantCommands>,
    pub billing: Arc<BillingService>,
    pub clock: Arc<dyn Clock>,
}

/// A new tenant's profile as the sign-up gave it.
#[derive(Debug, Clone)]
pub struct SignUp {
    pub name: Name,
    pub slug: Slug,
    pub owner_email: Email,
    pub industry: Option<Label>,
    pub company_size: Option<Label>,
    pub contact_email: Option<Email>,
    pub billing_email: Option<Email>,
    pub parent: Option<ParentTenant>,
}

/// A tenant just created, with the owner's key (shown once).
#[derive(Debug, Clone)]
pub struct SignedUp {
    pub tenant_id: TenantId,
    pub owner_member_id: MemberId,
    pub hierarchy_path: Vec<TenantId>,
    pub api_key: String,
    pub api_key_id: ApiKeyId,
    /// The tenant's creation (its version is the tenant's ETag).
    pub created: Committed,
}

/// An invitation just created, with its token (shown once).
#[derive(Debug, Clone)]
pub struct Invited {
    pub invitation_id: InvitationId,
    pub token: String,
    pub expires_at: DateTime<Utc>,
    pub committed: Committed,
}

/// An accepted invitation: the new member and its key (shown once).
#[derive(Debug, Clone)]
pub struct Joined {
    pub tenant_id: TenantId,
    pub member_id: MemberId,
    /// The role the invitation gave (from the aggregate, not a read model).
    pub role: Role,
    pub api_key: String,
    pub api_key_id: ApiKeyId,
    pub committed: Committed,
}

/// A key just created (shown once).
#[derive(Debug, Clone)]
pub struct CreatedKey {
    pub key: NewApiKey,
    pub plaintext: String,
    pub committed: Committed,
}

/// A fresh API key: the plaintext for the response, the hash for the event.
pub fn generate_key(name: Name) -> (NewApiKey, String) {
    let key_id: ApiKeyId = fresh_id("api-key");
    let generated = new_api_key(key_id.as_uuid());
    let key = NewApiKey {
        key_id,
        name,
        prefix: api_key_display_prefix(key_id.as_uuid()),
        secret_hash: generated.hash,
    };
    (key, generated.plaintext)
}

fn default_key_name() -> Name {
    Name::parse("default").expect("a valid name")
}

impl TenantService {
    /// The tenant as the log has it now (for decisions that span tenants).
    pub async fn load(&self, tenant_id: TenantId) -> Result<Tenant, CommandError> {
        self.commands.load(tenant_id).await
    }

    /// The parent a child tenant is created under, with its ancestry. A
    /// suspended parent creates no children (suspension stops its writes).
    pub async fn parent(&self, parent_id: TenantId) -> Result<ParentTenant, CommandError> {
        let parent = self.load(parent_id).await?;
        match parent.status {
            TenantStatus::Suspended => return Err(TenantError::Suspended.into()),
            TenantStatus::Deleted => return Err(TenantError::NotFound.into()),
            TenantStatus::Active => {}
        }
        Ok(ParentTenant {
            id: parent_id,
            hierarchy_path: parent.hierarchy_path,
        })
    }

    /// Creates the tenant, its owner and the owner's key. The caller chose
    /// both ids (its metadata names the new owner as the actor). A taken
    /// slug is a `Conflict` (the log's unique index decided it). The caller
    /// then creates the FREE subscription (`BillingService::ensure_subscription`)
    /// once the read models show the tenant, so what watches the tenant's
    /// first seat sees it before the subscription exists, as it always has.
    pub async fn sign_up(
        &self,
        tenant_id: TenantId,
        owner_member_id: MemberId,
        sign_up: SignUp,
        metadata: &CommandMetadata,
    ) -> Result<SignedUp, CommandError> {
        let (owner_key, api_key) = generate_key(default_key_name());
        let api_key_id = owner_key.key_id;
        let hierarchy_path: Vec<TenantId> = sign_up
            .parent
            .as_ref()
            .map(|p| p.hierarchy_path.iter().copied().chain([p.id]).collect())
            .unwrap_or_default();
        let command = TenantCommand::Create {
            tenant_id,
            name: sign_up.name,
            slug: sign_up.slug,
            owner_member_id,
            owner_email: sign_up.owner_email,
            owner_key,
            industry: sign_up.industry,
            company_size: sign_up.company_size,
            contact_email: sign_up.contact_email,
            billing_email: sign_up.billing_email,
            parent: sign_up.parent,
        };
        let created = self.commands.execute(tenant_id, command.into(), metadata).await?;
        Ok(SignedUp {
            tenant_id,
            owner_member_id,
            hierarchy_path,
            api_key,
            api_key_id,
            created,
        })
    }

    /// Runs a tenant command as the caller built it (no lookup needed).
    pub async fn execute(
        &self,
        tenant_id: TenantId,
        command: Versioned<TenantCommand>,
        metadata: &CommandMetadata,
    ) -> Result<Committed, CommandError> {
        self.commands.execute(tenant_id, command, metadata).await
    }

    /// Invites someone against the plan's member limit. Decided again on the
    /// newest state when a concurrent command wins, so 20 invitations racing
    /// for one free seat give one success and 19 refusals.
    pub async fn invite(
        &self,
        tenant_id: TenantId,
        by: Actor,
        email: Email,
        role: Role,
        valid_for: Duration,
        metadata: &CommandMetadata,
    ) -> Result<Invited, CommandError> {
        let invitation_id: InvitationId = fresh_id("invitation");
        let token = new_invitation_token(tenant_id.as_uuid(), invitation_id.as_uuid());
        let expires_at = self.clock.now() + valid_for;
        let command = TenantCommand::InviteMember {
            by,
            invitation_id,
            email,
            role,
            token_hash: token.hash,
            expires_at,
            member_limit: self.billing.entitlements(tenant_id).await?.max_members,
        };
        let committed = self
            .commands
            .execute_retrying(tenant_id, command.into(), metadata, RETRIES)
            .await?;
        Ok(Invited {
            invitation_id,
            token: token.plaintext,
            expires_at,
            committed,
        })
    }

    /// The tenant and invitation a token names, if it is one.
    pub fn invitation_of(token: &str) -> Option<(TenantId, InvitationId)> {
        parse_invitation_token(token.trim()).map(|(tenant, invitation)| (tenant.into(), invitation.into()))
    }

    /// Accepts an invitation with its token: the member (its id chosen by
    /// the caller, whose metadata names it as the actor) and its key,
    /// against the member limit now.
    pub async fn accept(
        &self,
        tenant_id: TenantId,
        invitation_id: InvitationId,
        member_id: MemberId,
        token: &str,
        metadata: &CommandMetadata,
    ) -> Result<Joined, CommandError> {
        let (api_key, plaintext) = generate_key(default_key_name());
        let api_key_id = api_key.key_id;
        let command = TenantCommand::AcceptInvitation {
            invitation_id,
            token_hash: sha256_hex(token.trim()),
            member_id,
            api_key,
            member_limit: self.billing.entitlements(tenant_id).await?.max_members,
        };
        let committed = self
            .commands
            .execute_retrying(tenant_id, command.into(), metadata, RETRIES)
            .await?;
        let role = self
            .load(tenant_id)
            .await?
            .members
            .get(&member_id)
            .map(|member| member.role)
            .ok_or_else(|| anyhow::anyhow!("an accepted invitation's member is not in the tenant"))?;
        Ok(Joined {
            tenant_id,
            member_id,
            role,
            api_key: plaintext,
            api_key_id,
            committed,
        })
    }

    /// A key for the acting member.
    pub async fn create_api_key(
        &self,
        tenant_id: TenantId,
        by: Actor,
        name: Name,
        metadata: &CommandMetadata,
    ) -> Result<CreatedKey, CommandError> {
        let (key, plaintext) = generate_key(name);
        let command = TenantCommand::CreateApiKey { by, key: key.clone() };
        let committed = self.commands.execute(tenant_id, command.into(), metadata).await?;
        Ok(CreatedKey {
            key,
            plaintext,
            committed,
        })
    }
}
