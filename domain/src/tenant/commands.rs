//! What may be asked of a tenant. Identifiers, token hashes and expiry times are
//! chosen by the caller (the application layer), so the aggregate stays pure.

use crate::ids::{ApiKeyId, InvitationId, MemberId, TenantId};
use crate::plans::Limit;
use crate::values::{Email, Label, Name, Role, Slug};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Who is asking, as far as the domain's rules care.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Actor {
    Member(MemberId),
    PlatformAdmin,
}

/// A command together with the aggregate version the caller last saw
/// (`If-Match`); a mismatch is refused before anything is decided.
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned<C> {
    pub expected_version: Option<u64>,
    pub command: C,
}

impl<C> From<C> for Versioned<C> {
    fn from(command: C) -> Self {
        Self {
            expected_version: None,
            command,
        }
    }
}

/// A freshly generated API key: only its hash ever reaches the aggregate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewApiKey {
    pub key_id: ApiKeyId,
    pub name: Name,
    pub prefix: String,
    pub secret_hash: String,
}

/// The parent of a child tenant, with the parent's own ancestry (root first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParentTenant {
    pub id: TenantId,
    pub hierarchy_path: Vec<TenantId>,
}

/// A partial profile update: `None` leaves a field alone; `Some(None)` clears
/// an optional field.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProfileChanges {
    pub name: Option<Name>,
    pub industry: Option<Option<Label>>,
    pub company_size: Option<Option<Label>>,
    pub contact_email: Option<Option<Email>>,
    pub billing_email: Option<Option<Email>>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TenantCommand {
    Create {
        tenant_id: TenantId,
        name: Name,
        slug: Slug,
        owner_member_id: MemberId,
        owner_email: Email,
        owner_key: NewApiKey,
        industry: Option<Label>,
        company_size: Option<Label>,
        contact_email: Option<Email>,
        billing_email: Option<Email>,
        parent: Option<ParentTenant>,
    },
    UpdateProfile {
        by: Actor,
        changes: ProfileChanges,
    },
    Delete {
        by: Actor,
        confirm_slug: String,
    },
    InviteMember {
        by: Actor,
        invitation_id: InvitationId,
        email: Email,
        role: Role,
        token_hash: String,
        expires_at: DateTime<Utc>,
        /// The tenant's member limit now (from its subscription): pending
        /// invitations count against it.
        member_limit: Limit,
    },
    RevokeInvitation {
        by: Actor,
        invitation_id: InvitationId,
    },
    AcceptInvitation {
        invitation_id: InvitationId,
        token_hash: String,
        member_id: MemberId,
        api_key: NewApiKey,
        member_limit: Limit,
    },
    ChangeMemberRole {
        by: Actor,
        member_id: MemberId,
        role: Role,
    },
    SuspendMember {
        by: Actor,
        member_id: MemberId,
    },
    ReactivateMember {
        by: Actor,
        member_id: MemberId,
    },
    RemoveMember {
        by: Actor,
        member_id: MemberId,
    },
    TransferOwnership {
        by: Actor,
        to_member_id: MemberId,
    },
    CreateApiKey {
        by: Actor,
        key: NewApiKey,
    },
    RevokeApiKey {
        by: Actor,
        key_id: ApiKeyId,
    },
    Suspend {
        by: Actor,
        reason: String,
    },
    Reactivate {
        by: Actor,
    },
}
