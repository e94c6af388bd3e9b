//! The Tenant's state as folded from its events, and the reads its
//! decisions (and the application layer) make of it.

use super::error::TenantError;
use super::events::{InvitationStatus, MemberStatus, TenantEvent, TenantStatus};
use crate::ids::{ApiKeyId, InvitationId, MemberId, TenantId};
use crate::plans::Limit;
use crate::tenant::commands::Actor;
use crate::values::{Email, Role, Slug};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberState {
    pub email: Email,
    pub role: Role,
    pub status: MemberStatus,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InvitationState {
    pub email: Email,
    pub role: Role,
    pub token_hash: String,
    pub expires_at: DateTime<Utc>,
    pub status: InvitationStatus,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiKeyState {
    pub member_id: MemberId,
    pub revoked: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Tenant {
    /// Number of events applied: the version clients see as the ETag.
    pub version: u64,
    pub id: Option<TenantId>,
    pub slug: Option<Slug>,
    pub status: TenantStatus,
    pub owner: Option<MemberId>,
    pub hierarchy_path: Vec<TenantId>,
    pub members: BTreeMap<MemberId, MemberState>,
    pub invitations: BTreeMap<InvitationId, InvitationState>,
    pub api_keys: BTreeMap<ApiKeyId, ApiKeyState>,
}

impl Tenant {
    /// Folds one event (the aggregate's `apply`).
    pub(super) fn fold(&mut self, event: TenantEvent) {
        self.version += 1;
        match event {
            TenantEvent::TenantCreated {
                tenant_id,
                slug,
                owner_member_id,
                owner_email,
                hierarchy_path,
                ..
            } => {
                self.id = Some(tenant_id);
                self.slug = Some(slug);
                self.owner = Some(owner_member_id);
                self.hierarchy_path = hierarchy_path;
                self.members.insert(
                    owner_member_id,
                    MemberState {
                        email: owner_email,
                        role: Role::Owner,
                        status: MemberStatus::Active,
                    },
                );
            }
            TenantEvent::ProfileUpdated { .. } => {}
            TenantEvent::TenantDeleted { .. } => self.status = TenantStatus::Deleted,
            TenantEvent::MemberInvited {
                invitation_id,
                email,
                role,
                token_hash,
                expires_at,
            } => {
                self.invitations.insert(
                    invitation_id,
                    InvitationState {
                        email,
                        role,
                        token_hash,
                        expires_at,
                        status: InvitationStatus::Pending,
                    },
                );
            }
            TenantEvent::InvitationRevoked { invitation_id } => {
                if let Some(invitation) = self.invitations.get_mut(&invitation_id) {
                    invitation.status = InvitationStatus::Revoked;
                }
            }
            TenantEvent::InvitationAccepted {
                invitation_id,
                member_id,
                email,
                role,
            } => {
                if let Some(invitation) = self.invitations.get_mut(&invitation_id) {
                    invitation.status = InvitationStatus::Accepted;
                }
                self.members.insert(
                    member_id,
                    MemberState {
                        email,
                        role,
                        status: MemberStatus::Active,
                    },
                );
            }
            TenantEvent::MemberRoleChanged { member_id, to, .. } => {
                if let Some(member) = self.members.get_mut(&member_id) {
                    member.role = to;
                }
            }
            TenantEvent::MemberSuspended { member_id } => self.set_member_status(member_id, MemberStatus::Suspended),
            TenantEvent::MemberReactivated { member_id } => self.set_member_status(member_id, MemberStatus::Active),
            TenantEvent::MemberRemoved { member_id } => self.set_member_status(member_id, MemberStatus::Removed),
            TenantEvent::OwnershipTransferred {
                from_member_id,
                to_member_id,
                previous_owner_role,
            } => {
                if let Some(previous) = self.members.get_mut(&from_member_id) {
                    previous.role = previous_owner_role;
                }
                if let Some(next) = self.members.get_mut(&to_member_id) {
                    next.role = Role::Owner;
                }
                self.owner = Some(to_member_id);
            }
            TenantEvent::ApiKeyCreated { key_id, member_id, .. } => {
                self.api_keys.insert(
                    key_id,
                    ApiKeyState {
                        member_id,
                        revoked: false,
                    },
                );
            }
            TenantEvent::ApiKeyRevoked { key_id } => {
                if let Some(key) = self.api_keys.get_mut(&key_id) {
                    key.revoked = true;
                }
            }
            TenantEvent::TenantSuspended { .. } => self.status = TenantStatus::Suspended,
            TenantEvent::TenantReactivated {} => self.status = TenantStatus::Active,
        }
    }

    fn set_member_status(&mut self, member_id: MemberId, status: MemberStatus) {
        if let Some(member) = self.members.get_mut(&member_id) {
            member.status = status;
        }
    }

    /// Seats in use: members not removed plus pending, unexpired invitations.
    pub fn seats_used(&self, now: DateTime<Utc>) -> u64 {
        let members = self
            .members
            .values()
            .filter(|member| member.status != MemberStatus::Removed)
            .count();
        let invitations = self
            .invitations
            .values()
            .filter(|inv| inv.status == InvitationStatus::Pending && inv.expires_at > now)
            .count();
        (members + invitations) as u64
    }

    /// Refuses one more seat over the limit; `taking` is an invitation whose
    /// seat turns into a member's (not counted twice).
    pub(super) fn check_member_limit(
        &self,
        limit: Limit,
        taking: Option<InvitationId>,
        now: DateTime<Utc>,
    ) -> Result<(), TenantError> {
        let held = taking
            .and_then(|id| self.invitations.get(&id))
            .is_some_and(|inv| inv.status == InvitationStatus::Pending && inv.expires_at > now);
        let used = self.seats_used(now) - u64::from(held);
        match limit {
            Limit::AtMost(max) if !limit.allows(used, 1) => Err(TenantError::LimitReached {
                metric: "members",
                used,
                limit: max,
            }),
            _ => Ok(()),
        }
    }

    /// A member that exists and has not been removed.
    pub(super) fn current_member(&self, member_id: MemberId) -> Result<&MemberState, TenantError> {
        self.members
            .get(&member_id)
            .filter(|member| member.status != MemberStatus::Removed)
            .ok_or(TenantError::NotFoundItem("member"))
    }

    pub(super) fn active_member_with_email(&self, email: &Email) -> Option<MemberId> {
        self.members
            .iter()
            .find(|(_, member)| member.status != MemberStatus::Removed && &member.email == email)
            .map(|(id, _)| *id)
    }

    pub(super) fn pending_invitation_for(&self, email: &Email, now: DateTime<Utc>) -> Option<InvitationId> {
        self.invitations
            .iter()
            .find(|(_, inv)| inv.status == InvitationStatus::Pending && inv.expires_at > now && &inv.email == email)
            .map(|(id, _)| *id)
    }

    /// The acting member's role must satisfy `allowed`; the platform admin
    /// always may (it acts by impersonation, recorded in the metadata).
    pub(super) fn require(&self, by: Actor, allowed: fn(Role) -> bool, message: &str) -> Result<(), TenantError> {
        match by {
            Actor::PlatformAdmin => Ok(()),
            Actor::Member(id) => match self.members.get(&id) {
                Some(member) if member.status == MemberStatus::Active && allowed(member.role) => Ok(()),
                Some(member) if member.status == MemberStatus::Active => Err(TenantError::Forbidden(message.into())),
                _ => Err(TenantError::Forbidden(
                    "the acting member is not active in this tenant".into(),
                )),
            },
        }
    }

    pub(super) fn require_owner(&self, by: Actor, message: &str) -> Result<MemberId, TenantError> {
        let owner = self.owner.ok_or(TenantError::NotFound)?;
        match by {
            Actor::Member(id) if id == owner => Ok(owner),
            _ => Err(TenantError::Forbidden(message.into())),
        }
    }
}
