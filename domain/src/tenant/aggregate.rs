//! The Tenant aggregate's state (folded from its events) and its decisions.

use super::MAX_HIERARCHY_DEPTH;
use super::commands::{Actor, NewApiKey, ProfileChanges, TenantCommand, Versioned};
use super::error::TenantError;
use super::events::{InvitationStatus, MemberStatus, TenantEvent, TenantStatus};
use crate::clock::{Clock, SystemClock};
use crate::plans::Limit;
use crate::values::{Email, Role, Slug};
use chrono::{DateTime, Utc};
use cqrs_es::Aggregate;
use cqrs_es::event_sink::EventSink;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use uuid::Uuid;

/// What the Tenant aggregate needs from outside: only the time.
pub struct TenantServices {
    pub clock: Arc<dyn Clock>,
}

impl Default for TenantServices {
    fn default() -> Self {
        Self {
            clock: Arc::new(SystemClock),
        }
    }
}

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
    pub member_id: Uuid,
    pub revoked: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Tenant {
    /// Number of events applied: the version clients see as the ETag.
    pub version: u64,
    pub id: Option<Uuid>,
    pub slug: Option<Slug>,
    pub status: TenantStatus,
    pub owner: Option<Uuid>,
    pub hierarchy_path: Vec<Uuid>,
    pub members: BTreeMap<Uuid, MemberState>,
    pub invitations: BTreeMap<Uuid, InvitationState>,
    pub api_keys: BTreeMap<Uuid, ApiKeyState>,
}

type Decision = Result<Vec<TenantEvent>, TenantError>;

impl Aggregate for Tenant {
    const TYPE: &'static str = "tenant";
    type Command = Versioned<TenantCommand>;
    type Event = TenantEvent;
    type Error = TenantError;
    type Services = TenantServices;

    async fn handle(
        &mut self,
        command: Self::Command,
        services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        if let Some(expected) = command.expected_version
            && expected != self.version
        {
            return Err(TenantError::VersionMismatch {
                expected,
                actual: self.version,
            });
        }
        for event in self.decide(command.command, services.clock.now())? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
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
}

impl Tenant {
    fn set_member_status(&mut self, member_id: Uuid, status: MemberStatus) {
        if let Some(member) = self.members.get_mut(&member_id) {
            member.status = status;
        }
    }

    fn decide(&self, command: TenantCommand, now: DateTime<Utc>) -> Decision {
        if let TenantCommand::Create { .. } = command {
            return self.create(command);
        }
        if self.id.is_none() || self.status == TenantStatus::Deleted {
            return Err(TenantError::NotFound);
        }
        match command {
            TenantCommand::Create { .. } => unreachable!("handled above"),
            TenantCommand::Suspend { by, reason } => {
                platform_admin(by)?;
                if self.status == TenantStatus::Suspended {
                    return Err(TenantError::Conflict("the tenant is already suspended".into()));
                }
                let reason = reason.trim().to_owned();
                if reason.is_empty() || reason.chars().count() > 500 {
                    return Err(TenantError::Rule(
                        "a suspension needs a reason of 1 to 500 characters".into(),
                    ));
                }
                Ok(vec![TenantEvent::TenantSuspended { reason }])
            }
            TenantCommand::Reactivate { by } => {
                platform_admin(by)?;
                if self.status != TenantStatus::Suspended {
                    return Err(TenantError::Conflict("the tenant is not suspended".into()));
                }
                Ok(vec![TenantEvent::TenantReactivated {}])
            }
            _ if self.status == TenantStatus::Suspended => Err(TenantError::Suspended),
            TenantCommand::AcceptInvitation {
                invitation_id,
                token_hash,
                member_id,
                api_key,
                member_limit,
            } => self.accept(invitation_id, &token_hash, member_id, api_key, member_limit, now),
            TenantCommand::UpdateProfile { by, changes } => {
                self.require(
                    by,
                    Role::can_administer,
                    "only an owner or admin can change the profile",
                )?;
                Ok(profile_event(changes).into_iter().collect())
            }
            TenantCommand::Delete { by, confirm_slug } => {
                let owner = self.require_owner(by, "only the owner can delete the tenant")?;
                if self.slug.as_ref().map(Slug::as_str) != Some(confirm_slug.as_str()) {
                    return Err(TenantError::Rule(
                        "confirm_slug does not match the tenant's slug".into(),
                    ));
                }
                Ok(vec![TenantEvent::TenantDeleted { by_member_id: owner }])
            }
            TenantCommand::InviteMember {
                by,
                invitation_id,
                email,
                role,
                token_hash,
                expires_at,
                member_limit,
            } => {
                self.require(by, Role::can_administer, "only an owner or admin can invite members")?;
                if role == Role::Owner {
                    return Err(TenantError::Rule(
                        "nobody is invited as owner: transfer ownership instead".into(),
                    ));
                }
                if expires_at <= now {
                    return Err(TenantError::Rule("an invitation must expire in the future".into()));
                }
                if self.active_member_with_email(&email).is_some() {
                    return Err(TenantError::Conflict(format!("{email} is already a member")));
                }
                if self.pending_invitation_for(&email, now).is_some() {
                    return Err(TenantError::Conflict(format!(
                        "{email} already has a pending invitation"
                    )));
                }
                if self.invitations.contains_key(&invitation_id) {
                    return Err(TenantError::Conflict("invitation id already used".into()));
                }
                self.check_member_limit(member_limit, None, now)?;
                Ok(vec![TenantEvent::MemberInvited {
                    invitation_id,
                    email,
                    role,
                    token_hash,
                    expires_at,
                }])
            }
            TenantCommand::RevokeInvitation { by, invitation_id } => {
                self.require(
                    by,
                    Role::can_administer,
                    "only an owner or admin can revoke invitations",
                )?;
                let invitation = self
                    .invitations
                    .get(&invitation_id)
                    .ok_or(TenantError::NotFoundItem("invitation"))?;
                if invitation.status != InvitationStatus::Pending {
                    return Err(TenantError::Conflict("the invitation is not pending".into()));
                }
                Ok(vec![TenantEvent::InvitationRevoked { invitation_id }])
            }
            TenantCommand::ChangeMemberRole { by, member_id, role } => {
                self.require(by, Role::can_administer, "only an owner or admin can change roles")?;
                let member = self.current_member(member_id)?;
                if member.role == Role::Owner {
                    return Err(TenantError::Rule(
                        "the owner's role only changes by ownership transfer".into(),
                    ));
                }
                if role == Role::Owner {
                    return Err(TenantError::Rule("make someone owner by ownership transfer".into()));
                }
                if member.role == role {
                    return Ok(vec![]);
                }
                Ok(vec![TenantEvent::MemberRoleChanged {
                    member_id,
                    from: member.role,
                    to: role,
                }])
            }
            TenantCommand::SuspendMember { by, member_id } => {
                self.require(by, Role::can_administer, "only an owner or admin can suspend members")?;
                let member = self.current_member(member_id)?;
                if member.role == Role::Owner {
                    return Err(TenantError::Rule("the owner cannot be suspended".into()));
                }
                if by == Actor::Member(member_id) {
                    return Err(TenantError::Rule("members cannot suspend themselves".into()));
                }
                match member.status {
                    MemberStatus::Suspended => Err(TenantError::Conflict("the member is already suspended".into())),
                    _ => Ok(vec![TenantEvent::MemberSuspended { member_id }]),
                }
            }
            TenantCommand::ReactivateMember { by, member_id } => {
                self.require(
                    by,
                    Role::can_administer,
                    "only an owner or admin can reactivate members",
                )?;
                let member = self.current_member(member_id)?;
                match member.status {
                    MemberStatus::Suspended => Ok(vec![TenantEvent::MemberReactivated { member_id }]),
                    _ => Err(TenantError::Conflict("the member is not suspended".into())),
                }
            }
            TenantCommand::RemoveMember { by, member_id } => {
                self.require(by, Role::can_administer, "only an owner or admin can remove members")?;
                let member = self.current_member(member_id)?;
                if member.role == Role::Owner {
                    return Err(TenantError::Rule(
                        "the owner cannot be removed: transfer ownership first".into(),
                    ));
                }
                Ok(vec![TenantEvent::MemberRemoved { member_id }])
            }
            TenantCommand::TransferOwnership { by, to_member_id } => {
                let owner = self.require_owner(by, "only the owner can transfer ownership")?;
                let target = self.current_member(to_member_id)?;
                if to_member_id == owner {
                    return Err(TenantError::Rule("the member is already the owner".into()));
                }
                if target.status != MemberStatus::Active {
                    return Err(TenantError::Rule("ownership can only go to an active member".into()));
                }
                Ok(vec![TenantEvent::OwnershipTransferred {
                    from_member_id: owner,
                    to_member_id,
                    previous_owner_role: Role::Admin,
                }])
            }
            TenantCommand::CreateApiKey { by, key } => {
                let Actor::Member(member_id) = by else {
                    return Err(TenantError::Forbidden("API keys belong to members".into()));
                };
                let member = self.current_member(member_id)?;
                if member.status != MemberStatus::Active {
                    return Err(TenantError::Forbidden("the member is not active".into()));
                }
                if self.api_keys.contains_key(&key.key_id) {
                    return Err(TenantError::Conflict("API key id already used".into()));
                }
                Ok(vec![key_created(key, member_id)])
            }
            TenantCommand::RevokeApiKey { by, key_id } => {
                let key = self.api_keys.get(&key_id).ok_or(TenantError::NotFoundItem("API key"))?;
                let own_key = by == Actor::Member(key.member_id);
                if !own_key {
                    self.require(
                        by,
                        Role::can_administer,
                        "only an owner or admin can revoke others' keys",
                    )?;
                }
                if key.revoked {
                    return Err(TenantError::Conflict("the API key is already revoked".into()));
                }
                Ok(vec![TenantEvent::ApiKeyRevoked { key_id }])
            }
        }
    }

    fn create(&self, command: TenantCommand) -> Decision {
        let TenantCommand::Create {
            tenant_id,
            name,
            slug,
            owner_member_id,
            owner_email,
            owner_key,
            industry,
            company_size,
            contact_email,
            billing_email,
            parent,
        } = command
        else {
            unreachable!("only called with Create");
        };
        if self.id.is_some() {
            return Err(TenantError::AlreadyExists);
        }
        let hierarchy_path = match &parent {
            None => vec![],
            Some(parent) => {
                let mut path = parent.hierarchy_path.clone();
                path.push(parent.id);
                // The new tenant sits one level below its last ancestor.
                if path.len() + 1 > MAX_HIERARCHY_DEPTH {
                    return Err(TenantError::Rule(format!(
                        "tenant hierarchies are at most {MAX_HIERARCHY_DEPTH} levels deep"
                    )));
                }
                path
            }
        };
        Ok(vec![
            TenantEvent::TenantCreated {
                tenant_id,
                name,
                slug,
                owner_member_id,
                owner_email,
                industry,
                company_size,
                contact_email,
                billing_email,
                parent_tenant_id: parent.map(|p| p.id),
                hierarchy_path,
            },
            key_created(owner_key, owner_member_id),
        ])
    }

    fn accept(
        &self,
        invitation_id: Uuid,
        token_hash: &str,
        member_id: Uuid,
        api_key: NewApiKey,
        member_limit: Limit,
        now: DateTime<Utc>,
    ) -> Decision {
        let invitation = self
            .invitations
            .get(&invitation_id)
            .filter(|invitation| constant_time_eq(invitation.token_hash.as_bytes(), token_hash.as_bytes()))
            .ok_or(TenantError::NotFoundItem("invitation"))?;
        match invitation.status {
            InvitationStatus::Revoked => return Err(TenantError::InvitationGone("it was revoked")),
            InvitationStatus::Accepted => return Err(TenantError::InvitationGone("it was already accepted")),
            InvitationStatus::Pending if invitation.expires_at <= now => {
                return Err(TenantError::InvitationGone("it has expired"));
            }
            InvitationStatus::Pending => {}
        }
        if self.active_member_with_email(&invitation.email).is_some() {
            return Err(TenantError::Conflict(format!(
                "{} is already a member",
                invitation.email
            )));
        }
        if self.members.contains_key(&member_id) {
            return Err(TenantError::Conflict("member id already used".into()));
        }
        // The invitation already held a seat; a downgrade since may have
        // taken it away.
        self.check_member_limit(member_limit, Some(invitation_id), now)?;
        Ok(vec![
            TenantEvent::InvitationAccepted {
                invitation_id,
                member_id,
                email: invitation.email.clone(),
                role: invitation.role,
            },
            key_created(api_key, member_id),
        ])
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
    fn check_member_limit(&self, limit: Limit, taking: Option<Uuid>, now: DateTime<Utc>) -> Result<(), TenantError> {
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
    fn current_member(&self, member_id: Uuid) -> Result<&MemberState, TenantError> {
        self.members
            .get(&member_id)
            .filter(|member| member.status != MemberStatus::Removed)
            .ok_or(TenantError::NotFoundItem("member"))
    }

    fn active_member_with_email(&self, email: &Email) -> Option<Uuid> {
        self.members
            .iter()
            .find(|(_, member)| member.status != MemberStatus::Removed && &member.email == email)
            .map(|(id, _)| *id)
    }

    fn pending_invitation_for(&self, email: &Email, now: DateTime<Utc>) -> Option<Uuid> {
        self.invitations
            .iter()
            .find(|(_, inv)| inv.status == InvitationStatus::Pending && inv.expires_at > now && &inv.email == email)
            .map(|(id, _)| *id)
    }

    /// The acting member's role must satisfy `allowed`; the platform admin
    /// always may (it acts by impersonation, recorded in the metadata).
    fn require(&self, by: Actor, allowed: fn(Role) -> bool, message: &str) -> Result<(), TenantError> {
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

    fn require_owner(&self, by: Actor, message: &str) -> Result<Uuid, TenantError> {
        let owner = self.owner.ok_or(TenantError::NotFound)?;
        match by {
            Actor::Member(id) if id == owner => Ok(owner),
            _ => Err(TenantError::Forbidden(message.into())),
        }
    }
}

fn platform_admin(by: Actor) -> Result<(), TenantError> {
    match by {
        Actor::PlatformAdmin => Ok(()),
        Actor::Member(_) => Err(TenantError::Forbidden("only the platform admin can do this".into())),
    }
}

fn key_created(key: NewApiKey, member_id: Uuid) -> TenantEvent {
    TenantEvent::ApiKeyCreated {
        key_id: key.key_id,
        member_id,
        name: key.name,
        prefix: key.prefix,
        secret_hash: key.secret_hash,
    }
}

fn profile_event(changes: ProfileChanges) -> Option<TenantEvent> {
    let ProfileChanges {
        name,
        industry,
        company_size,
        contact_email,
        billing_email,
    } = changes;
    let nothing = name.is_none()
        && industry.is_none()
        && company_size.is_none()
        && contact_email.is_none()
        && billing_email.is_none();
    (!nothing).then_some(TenantEvent::ProfileUpdated {
        name,
        industry,
        company_size,
        contact_email,
        billing_email,
    })
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
