//! One given/when/then test per business rule of the Tenant aggregate, by
//! concern; the fixtures they share are here.

mod invitations;
mod lifecycle;
mod members;

use super::*;
use crate::clock::ManualClock;
use crate::ids::{ApiKeyId, InvitationId, MemberId, TenantId};
use crate::plans::Limit;
use crate::values::{Email, Name, Role, Slug};
use chrono::{DateTime, Duration, TimeZone, Utc};
use cqrs_es::test::TestFramework;
use std::sync::Arc;

type Fixture = TestFramework<Tenant>;

const TENANT: TenantId = TenantId::from_u128(1);
const OWNER: MemberId = MemberId::from_u128(10);
const ADMIN: MemberId = MemberId::from_u128(11);
const ANALYST: MemberId = MemberId::from_u128(12);
const INVITE: InvitationId = InvitationId::from_u128(20);
const KEY: ApiKeyId = ApiKeyId::from_u128(30);

fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 1, 12, 0, 0).unwrap()
}

fn fixture() -> Fixture {
    fixture_at(ManualClock::at(start()))
}

fn fixture_at(clock: ManualClock) -> Fixture {
    Fixture::with(TenantServices { clock: Arc::new(clock) })
}

fn email(s: &str) -> Email {
    Email::parse(s).unwrap()
}

fn key(id: ApiKeyId) -> NewApiKey {
    NewApiKey {
        key_id: id,
        name: Name::parse("default").unwrap(),
        prefix: "cwk_00000000".into(),
        secret_hash: "hash".into(),
    }
}

fn create_command(parent: Option<ParentTenant>) -> Versioned<TenantCommand> {
    TenantCommand::Create {
        tenant_id: TENANT,
        name: Name::parse("Acme").unwrap(),
        slug: Slug::parse("acme").unwrap(),
        owner_member_id: OWNER,
        owner_email: email("owner@acme.test"),
        owner_key: key(KEY),
        industry: None,
        company_size: None,
        contact_email: None,
        billing_email: None,
        parent,
    }
    .into()
}

fn created(hierarchy_path: Vec<TenantId>) -> TenantEvent {
    TenantEvent::TenantCreated {
        tenant_id: TENANT,
        name: Name::parse("Acme").unwrap(),
        slug: Slug::parse("acme").unwrap(),
        owner_member_id: OWNER,
        owner_email: email("owner@acme.test"),
        industry: None,
        company_size: None,
        contact_email: None,
        billing_email: None,
        parent_tenant_id: hierarchy_path.last().copied(),
        hierarchy_path,
    }
}

fn owner_key_created() -> TenantEvent {
    TenantEvent::ApiKeyCreated {
        key_id: KEY,
        member_id: OWNER,
        name: Name::parse("default").unwrap(),
        prefix: "cwk_00000000".into(),
        secret_hash: "hash".into(),
    }
}

fn invited(id: InvitationId, who: &str, role: Role) -> TenantEvent {
    TenantEvent::MemberInvited {
        invitation_id: id,
        email: email(who),
        role,
        token_hash: format!("token-{id}"),
        expires_at: start() + Duration::days(7),
    }
}

fn joined(invitation: InvitationId, member: MemberId, who: &str, role: Role) -> TenantEvent {
    TenantEvent::InvitationAccepted {
        invitation_id: invitation,
        member_id: member,
        email: email(who),
        role,
    }
}

/// A tenant with an owner, an admin and an analyst.
fn team() -> Vec<TenantEvent> {
    vec![
        created(vec![]),
        owner_key_created(),
        invited(InvitationId::from_u128(21), "admin@acme.test", Role::Admin),
        joined(InvitationId::from_u128(21), ADMIN, "admin@acme.test", Role::Admin),
        invited(InvitationId::from_u128(22), "analyst@acme.test", Role::Analyst),
        joined(InvitationId::from_u128(22), ANALYST, "analyst@acme.test", Role::Analyst),
    ]
}

fn cmd(command: TenantCommand) -> Versioned<TenantCommand> {
    command.into()
}

fn invite(by: MemberId, who: &str, role: Role) -> Versioned<TenantCommand> {
    cmd(TenantCommand::InviteMember {
        by: Actor::Member(by),
        invitation_id: INVITE,
        email: email(who),
        role,
        token_hash: format!("token-{INVITE}"),
        expires_at: start() + Duration::days(7),
        member_limit: Limit::Unlimited,
    })
}

fn invite_within(limit: u64, invitation: u128, who: &str) -> Versioned<TenantCommand> {
    cmd(TenantCommand::InviteMember {
        by: Actor::Member(OWNER),
        invitation_id: InvitationId::from_u128(invitation),
        email: email(who),
        role: Role::Analyst,
        token_hash: format!("token-{invitation}"),
        expires_at: start() + Duration::days(7),
        member_limit: Limit::AtMost(limit),
    })
}

fn accept(token_hash: &str) -> Versioned<TenantCommand> {
    cmd(TenantCommand::AcceptInvitation {
        invitation_id: INVITE,
        token_hash: token_hash.into(),
        member_id: MemberId::from_u128(40),
        api_key: key(ApiKeyId::from_u128(41)),
        member_limit: Limit::Unlimited,
    })
}
