//! The Tenant aggregate's decisions: `decide` checks what every command
//! shares (existence, suspension) and hands each command to its own function.

use super::MAX_HIERARCHY_DEPTH;
use super::commands::{Actor, NewApiKey, ProfileChanges, TenantCommand, Versioned};
use super::error::TenantError;
use super::events::{InvitationStatus, MemberStatus, TenantEvent, TenantStatus};
use super::state::Tenant;
use crate::clock::{Clock, SystemClock};
use crate::ids::{ApiKeyId, InvitationId, MemberId};
use crate::plans::Limit;
use crate::values::{Role, Slug};
use chrono::{DateTime, Utc};
use cqrs_es::Aggregate;
use cqrs_es::event_sink::EventSink;
use std::sync::Arc;

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
        crate::emit::emit(self, sink, self.decide(command.command, services.clock.now())?).await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        self.fold(event);
    }
}

impl Tenant {
    fn decide(&self, command: TenantCommand, now: DateTime<Utc>) -> Decision {
        use TenantCommand as C;
        if let C::Create { .. } = command {
            return self.create(command);
        }
        if self.id.is_none() || self.status == TenantStatus::Deleted {
            return Err(TenantError::NotFound);
        }
        match command {
            C::Create { .. } => unreachable!("handled above"),
            C::Suspend { by, reason } => self.suspend(by, reason),
            C::Reactivate { by } => self.reactivate(by),
            _ if self.status == TenantStatus::Suspended => Err(TenantError::Suspended),
            C::AcceptInvitation {
                invitation_id,
                token_hash,
                member_id,
                api_key,
                member_limit,
            } => self.accept_invitation(invitation_id, &token_hash, member_id, api_key, member_limit, now),
            C::UpdateProfile { by, changes } => self.update_profile(by, changes),
            C::Delete { by, confirm_slug } => self.delete(by, &confirm_slug),
            command @ C::InviteMember { .. } => self.invite_member(command, now),
            C::RevokeInvitation { by, invitation_id } => self.revoke_invitation(by, invitation_id),
            C::ChangeMemberRole { by, member_id, role } => self.change_member_role(by, member_id, role),
            C::SuspendMember { by, member_id } => self.suspend_member(by, member_id),
            C::ReactivateMember { by, member_id } => self.reactivate_member(by, member_id),
            C::RemoveMember { by, member_id } => self.remove_member(by, member_id),
            C::TransferOwnership { by, to_member_id } => self.transfer_ownership(by, to_member_id),
            C::CreateApiKey { by, key } => self.create_api_key(by, key),
            C::RevokeApiKey { by, key_id } => self.revoke_api_key(by, key_id),
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

    fn suspend(&self, by: Actor, reason: String) -> Decision {
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

    fn reactivate(&self, by: Actor) -> Decision {
        platform_admin(by)?;
        if self.status != TenantStatus::Suspended {
            return Err(TenantError::Conflict("the tenant is not suspended".into()));
        }
        Ok(vec![TenantEvent::TenantReactivated {}])
    }

    fn update_profile(&self, by: Actor, changes: ProfileChanges) -> Decision {
        self.require(
            by,
            Role::can_administer,
            "only an owner or admin can change the profile",
        )?;
        Ok(profile_event(changes).into_iter().collect())
    }

    fn delete(&self, by: Actor, confirm_slug: &str) -> Decision {
        let owner = self.require_owner(by, "only the owner can delete the tenant")?;
        if self.slug.as_ref().map(Slug::as_str) != Some(confirm_slug) {
            return Err(TenantError::Rule(
                "confirm_slug does not match the tenant's slug".into(),
            ));
        }
        Ok(vec![TenantEvent::TenantDeleted { by_member_id: owner }])
    }

    fn invite_member(&self, command: TenantCommand, now: DateTime<Utc>) -> Decision {
        let TenantCommand::InviteMember {
            by,
            invitation_id,
            email,
            role,
            token_hash,
            expires_at,
            member_limit,
        } = command
        else {
            unreachable!("only called with InviteMember");
        };
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

    fn revoke_invitation(&self, by: Actor, invitation_id: InvitationId) -> Decision {
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

    fn accept_invitation(
        &self,
        invitation_id: InvitationId,
        token_hash: &str,
        member_id: MemberId,
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

    fn change_member_role(&self, by: Actor, member_id: MemberId, role: Role) -> Decision {
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

    fn suspend_member(&self, by: Actor, member_id: MemberId) -> Decision {
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

    fn reactivate_member(&self, by: Actor, member_id: MemberId) -> Decision {
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

    fn remove_member(&self, by: Actor, member_id: MemberId) -> Decision {
        self.require(by, Role::can_administer, "only an owner or admin can remove members")?;
        let member = self.current_member(member_id)?;
        if member.role == Role::Owner {
            return Err(TenantError::Rule(
                "the owner cannot be removed: transfer ownership first".into(),
            ));
        }
        Ok(vec![TenantEvent::MemberRemoved { member_id }])
    }

    fn transfer_ownership(&self, by: Actor, to_member_id: MemberId) -> Decision {
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

    fn create_api_key(&self, by: Actor, key: NewApiKey) -> Decision {
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

    fn revoke_api_key(&self, by: Actor, key_id: ApiKeyId) -> Decision {
        let key = self.api_keys.get(&key_id).ok_or(TenantError::NotFoundItem("API key"))?;
        let own_key = by == Actor::Member(key.member_id);
        // Nobody locks the owner out: only the owner revokes its keys (the
        // platform admin does so by impersonating the owner, recorded as such).
        if Some(key.member_id) == self.owner && !own_key {
            return Err(TenantError::Forbidden(
                "only the owner revokes the owner's API keys".into(),
            ));
        }
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

fn platform_admin(by: Actor) -> Result<(), TenantError> {
    match by {
        Actor::PlatformAdmin => Ok(()),
        Actor::Member(_) => Err(TenantError::Forbidden("only the platform admin can do this".into())),
    }
}

fn key_created(key: NewApiKey, member_id: MemberId) -> TenantEvent {
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
