//! What happened to a tenant. Event names are past tense; every event is at
//! version 1.0 (an upcaster is added beside a new version when one changes).

use crate::ids::{ApiKeyId, InvitationId, MemberId, TenantId};
use crate::values::{Email, Label, Name, Role, Slug};
use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TenantStatus {
    #[default]
    Active,
    Suspended,
    Deleted,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberStatus {
    Active,
    Suspended,
    Removed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InvitationStatus {
    Pending,
    Accepted,
    Revoked,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TenantEvent {
    TenantCreated {
        tenant_id: TenantId,
        name: Name,
        slug: Slug,
        owner_member_id: MemberId,
        owner_email: Email,
        industry: Option<Label>,
        company_size: Option<Label>,
        contact_email: Option<Email>,
        billing_email: Option<Email>,
        parent_tenant_id: Option<TenantId>,
        /// Ancestors from the root down to the parent; empty for a root tenant.
        hierarchy_path: Vec<TenantId>,
    },
    /// Only the fields that changed are present; `null` means cleared.
    ProfileUpdated {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<Name>,
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            deserialize_with = "crate::values::double_option"
        )]
        industry: Option<Option<Label>>,
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            deserialize_with = "crate::values::double_option"
        )]
        company_size: Option<Option<Label>>,
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            deserialize_with = "crate::values::double_option"
        )]
        contact_email: Option<Option<Email>>,
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            deserialize_with = "crate::values::double_option"
        )]
        billing_email: Option<Option<Email>>,
    },
    TenantDeleted {
        by_member_id: MemberId,
    },
    MemberInvited {
        invitation_id: InvitationId,
        email: Email,
        role: Role,
        token_hash: String,
        expires_at: DateTime<Utc>,
    },
    InvitationRevoked {
        invitation_id: InvitationId,
    },
    InvitationAccepted {
        invitation_id: InvitationId,
        member_id: MemberId,
        email: Email,
        role: Role,
    },
    MemberRoleChanged {
        member_id: MemberId,
        from: Role,
        to: Role,
    },
    MemberSuspended {
        member_id: MemberId,
    },
    MemberReactivated {
        member_id: MemberId,
    },
    MemberRemoved {
        member_id: MemberId,
    },
    OwnershipTransferred {
        from_member_id: MemberId,
        to_member_id: MemberId,
        /// The role the previous owner keeps.
        previous_owner_role: Role,
    },
    ApiKeyCreated {
        key_id: ApiKeyId,
        member_id: MemberId,
        name: Name,
        prefix: String,
        secret_hash: String,
    },
    ApiKeyRevoked {
        key_id: ApiKeyId,
    },
    TenantSuspended {
        reason: String,
    },
    TenantReactivated {},
}

impl TenantEvent {
    pub fn name(&self) -> &'static str {
        match self {
            Self::TenantCreated { .. } => "TenantCreated",
            Self::ProfileUpdated { .. } => "ProfileUpdated",
            Self::TenantDeleted { .. } => "TenantDeleted",
            Self::MemberInvited { .. } => "MemberInvited",
            Self::InvitationRevoked { .. } => "InvitationRevoked",
            Self::InvitationAccepted { .. } => "InvitationAccepted",
            Self::MemberRoleChanged { .. } => "MemberRoleChanged",
            Self::MemberSuspended { .. } => "MemberSuspended",
            Self::MemberReactivated { .. } => "MemberReactivated",
            Self::MemberRemoved { .. } => "MemberRemoved",
            Self::OwnershipTransferred { .. } => "OwnershipTransferred",
            Self::ApiKeyCreated { .. } => "ApiKeyCreated",
            Self::ApiKeyRevoked { .. } => "ApiKeyRevoked",
            Self::TenantSuspended { .. } => "TenantSuspended",
            Self::TenantReactivated { .. } => "TenantReactivated",
        }
    }
}

impl DomainEvent for TenantEvent {
    fn event_type(&self) -> String {
        self.name().to_owned()
    }

    fn event_version(&self) -> String {
        "1.0".to_owned()
    }
}
