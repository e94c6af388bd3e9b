//! One given/when/then test per business rule of the Tenant aggregate.

use super::*;
use crate::clock::ManualClock;
use crate::plans::Limit;
use crate::values::{Email, Name, Role, Slug};
use chrono::{DateTime, Duration, TimeZone, Utc};
use cqrs_es::test::TestFramework;
use std::sync::Arc;
use uuid::Uuid;

type Fixture = TestFramework<Tenant>;

const TENANT: Uuid = Uuid::from_u128(1);
const OWNER: Uuid = Uuid::from_u128(10);
const ADMIN: Uuid = Uuid::from_u128(11);
const ANALYST: Uuid = Uuid::from_u128(12);
const INVITE: Uuid = Uuid::from_u128(20);
const KEY: Uuid = Uuid::from_u128(30);

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

fn key(id: Uuid) -> NewApiKey {
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

fn created(hierarchy_path: Vec<Uuid>) -> TenantEvent {
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

fn invited(id: Uuid, who: &str, role: Role) -> TenantEvent {
    TenantEvent::MemberInvited {
        invitation_id: id,
        email: email(who),
        role,
        token_hash: format!("token-{id}"),
        expires_at: start() + Duration::days(7),
    }
}

fn joined(invitation: Uuid, member: Uuid, who: &str, role: Role) -> TenantEvent {
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
        invited(Uuid::from_u128(21), "admin@acme.test", Role::Admin),
        joined(Uuid::from_u128(21), ADMIN, "admin@acme.test", Role::Admin),
        invited(Uuid::from_u128(22), "analyst@acme.test", Role::Analyst),
        joined(Uuid::from_u128(22), ANALYST, "analyst@acme.test", Role::Analyst),
    ]
}

fn cmd(command: TenantCommand) -> Versioned<TenantCommand> {
    command.into()
}

fn invite(by: Uuid, who: &str, role: Role) -> Versioned<TenantCommand> {
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
        invitation_id: Uuid::from_u128(invitation),
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
        member_id: Uuid::from_u128(40),
        api_key: key(Uuid::from_u128(41)),
        member_limit: Limit::Unlimited,
    })
}

#[test]
fn creating_a_tenant_makes_its_owner_and_the_owners_key() {
    fixture()
        .given_no_previous_events()
        .when(create_command(None))
        .then_expect_events(vec![created(vec![]), owner_key_created()]);
}

#[test]
fn a_tenant_cannot_be_created_twice() {
    fixture()
        .given(vec![created(vec![])])
        .when(create_command(None))
        .then_expect_error(TenantError::AlreadyExists);
}

#[test]
fn a_child_records_its_parent_and_the_materialized_path() {
    let root = Uuid::from_u128(100);
    let parent = Uuid::from_u128(101);
    fixture()
        .given_no_previous_events()
        .when(create_command(Some(ParentTenant {
            id: parent,
            hierarchy_path: vec![root],
        })))
        .then_expect_events(vec![created(vec![root, parent]), owner_key_created()]);
}

#[test]
fn hierarchies_are_at_most_five_levels_deep() {
    let ancestors: Vec<Uuid> = (100..103).map(Uuid::from_u128).collect();
    // Parent at level 4 (three ancestors above it): the child is level 5.
    fixture()
        .given_no_previous_events()
        .when(create_command(Some(ParentTenant {
            id: Uuid::from_u128(103),
            hierarchy_path: ancestors.clone(),
        })))
        .inspect_result()
        .expect("level 5 is allowed");
    let mut deeper = ancestors;
    deeper.push(Uuid::from_u128(103));
    fixture()
        .given_no_previous_events()
        .when(create_command(Some(ParentTenant {
            id: Uuid::from_u128(104),
            hierarchy_path: deeper,
        })))
        .then_expect_error(TenantError::Rule("tenant hierarchies are at most 5 levels deep".into()));
}

#[test]
fn an_expected_version_that_does_not_match_is_refused() {
    fixture()
        .given(team())
        .when(Versioned {
            expected_version: Some(2),
            command: TenantCommand::UpdateProfile {
                by: Actor::Member(OWNER),
                changes: ProfileChanges {
                    name: Some(Name::parse("Acme 2").unwrap()),
                    ..Default::default()
                },
            },
        })
        .then_expect_error(TenantError::VersionMismatch { expected: 2, actual: 6 });
}

#[test]
fn admins_update_the_profile_but_analysts_cannot() {
    let changes = ProfileChanges {
        name: Some(Name::parse("Acme 2").unwrap()),
        industry: Some(None),
        ..Default::default()
    };
    fixture()
        .given(team())
        .when(cmd(TenantCommand::UpdateProfile {
            by: Actor::Member(ADMIN),
            changes: changes.clone(),
        }))
        .then_expect_events(vec![TenantEvent::ProfileUpdated {
            name: Some(Name::parse("Acme 2").unwrap()),
            industry: Some(None),
            company_size: None,
            contact_email: None,
            billing_email: None,
        }]);
    fixture()
        .given(team())
        .when(cmd(TenantCommand::UpdateProfile {
            by: Actor::Member(ANALYST),
            changes,
        }))
        .then_expect_error(TenantError::Forbidden(
            "only an owner or admin can change the profile".into(),
        ));
}

#[test]
fn only_the_owner_deletes_and_only_with_the_slug_as_confirmation() {
    fixture()
        .given(team())
        .when(cmd(TenantCommand::Delete {
            by: Actor::Member(ADMIN),
            confirm_slug: "acme".into(),
        }))
        .then_expect_error(TenantError::Forbidden("only the owner can delete the tenant".into()));
    fixture()
        .given(team())
        .when(cmd(TenantCommand::Delete {
            by: Actor::Member(OWNER),
            confirm_slug: "acme-typo".into(),
        }))
        .then_expect_error(TenantError::Rule(
            "confirm_slug does not match the tenant's slug".into(),
        ));
    fixture()
        .given(team())
        .when(cmd(TenantCommand::Delete {
            by: Actor::Member(OWNER),
            confirm_slug: "acme".into(),
        }))
        .then_expect_events(vec![TenantEvent::TenantDeleted { by_member_id: OWNER }]);
}

#[test]
fn a_deleted_tenant_refuses_everything() {
    let mut history = team();
    history.push(TenantEvent::TenantDeleted { by_member_id: OWNER });
    fixture()
        .given(history)
        .when(invite(OWNER, "new@acme.test", Role::Analyst))
        .then_expect_error(TenantError::NotFound);
}

#[test]
fn admins_invite_members_with_a_hashed_expiring_token() {
    fixture()
        .given(team())
        .when(invite(ADMIN, "new@acme.test", Role::Auditor))
        .then_expect_events(vec![invited(INVITE, "new@acme.test", Role::Auditor)]);
}

#[test]
fn analysts_cannot_invite() {
    fixture()
        .given(team())
        .when(invite(ANALYST, "new@acme.test", Role::Analyst))
        .then_expect_error(TenantError::Forbidden(
            "only an owner or admin can invite members".into(),
        ));
}

#[test]
fn nobody_is_invited_as_owner() {
    fixture()
        .given(team())
        .when(invite(OWNER, "new@acme.test", Role::Owner))
        .then_expect_error(TenantError::Rule(
            "nobody is invited as owner: transfer ownership instead".into(),
        ));
}

#[test]
fn members_and_pending_invitees_are_not_invited_again() {
    fixture()
        .given(team())
        .when(invite(OWNER, "analyst@acme.test", Role::Analyst))
        .then_expect_error(TenantError::Conflict("analyst@acme.test is already a member".into()));
    let mut history = team();
    history.push(invited(Uuid::from_u128(23), "new@acme.test", Role::Analyst));
    fixture()
        .given(history)
        .when(invite(OWNER, "new@acme.test", Role::Analyst))
        .then_expect_error(TenantError::Conflict(
            "new@acme.test already has a pending invitation".into(),
        ));
}

#[test]
fn accepting_a_valid_invitation_creates_the_member_and_a_key() {
    let mut history = team();
    history.push(invited(INVITE, "new@acme.test", Role::Analyst));
    fixture()
        .given(history)
        .when(accept(&format!("token-{INVITE}")))
        .then_expect_events(vec![
            joined(INVITE, Uuid::from_u128(40), "new@acme.test", Role::Analyst),
            TenantEvent::ApiKeyCreated {
                key_id: Uuid::from_u128(41),
                member_id: Uuid::from_u128(40),
                name: Name::parse("default").unwrap(),
                prefix: "cwk_00000000".into(),
                secret_hash: "hash".into(),
            },
        ]);
}

#[test]
fn a_wrong_token_is_refused() {
    let mut history = team();
    history.push(invited(INVITE, "new@acme.test", Role::Analyst));
    fixture()
        .given(history)
        .when(accept("token-guess"))
        .then_expect_error(TenantError::NotFoundItem("invitation"));
}

#[test]
fn an_expired_invitation_is_refused() {
    let clock = ManualClock::at(start());
    clock.advance(Duration::days(7));
    let mut history = team();
    history.push(invited(INVITE, "new@acme.test", Role::Analyst));
    fixture_at(clock)
        .given(history)
        .when(accept(&format!("token-{INVITE}")))
        .then_expect_error(TenantError::InvitationGone("it has expired"));
}

#[test]
fn a_revoked_invitation_is_refused() {
    let mut history = team();
    history.push(invited(INVITE, "new@acme.test", Role::Analyst));
    history.push(TenantEvent::InvitationRevoked { invitation_id: INVITE });
    fixture()
        .given(history)
        .when(accept(&format!("token-{INVITE}")))
        .then_expect_error(TenantError::InvitationGone("it was revoked"));
}

#[test]
fn an_invitation_is_accepted_once() {
    let mut history = team();
    history.push(invited(INVITE, "new@acme.test", Role::Analyst));
    history.push(joined(INVITE, Uuid::from_u128(40), "new@acme.test", Role::Analyst));
    fixture()
        .given(history)
        .when(accept(&format!("token-{INVITE}")))
        .then_expect_error(TenantError::InvitationGone("it was already accepted"));
}

#[test]
fn admins_change_roles() {
    fixture()
        .given(team())
        .when(cmd(TenantCommand::ChangeMemberRole {
            by: Actor::Member(ADMIN),
            member_id: ANALYST,
            role: Role::ReadOnly,
        }))
        .then_expect_events(vec![TenantEvent::MemberRoleChanged {
            member_id: ANALYST,
            from: Role::Analyst,
            to: Role::ReadOnly,
        }]);
}

#[test]
fn the_owner_is_never_demoted_and_nobody_is_promoted_to_owner() {
    fixture()
        .given(team())
        .when(cmd(TenantCommand::ChangeMemberRole {
            by: Actor::Member(ADMIN),
            member_id: OWNER,
            role: Role::Analyst,
        }))
        .then_expect_error(TenantError::Rule(
            "the owner's role only changes by ownership transfer".into(),
        ));
    fixture()
        .given(team())
        .when(cmd(TenantCommand::ChangeMemberRole {
            by: Actor::Member(OWNER),
            member_id: ADMIN,
            role: Role::Owner,
        }))
        .then_expect_error(TenantError::Rule("make someone owner by ownership transfer".into()));
}

#[test]
fn the_owner_cannot_be_suspended_or_removed() {
    fixture()
        .given(team())
        .when(cmd(TenantCommand::SuspendMember {
            by: Actor::Member(ADMIN),
            member_id: OWNER,
        }))
        .then_expect_error(TenantError::Rule("the owner cannot be suspended".into()));
    fixture()
        .given(team())
        .when(cmd(TenantCommand::RemoveMember {
            by: Actor::Member(ADMIN),
            member_id: OWNER,
        }))
        .then_expect_error(TenantError::Rule(
            "the owner cannot be removed: transfer ownership first".into(),
        ));
}

#[test]
fn members_are_suspended_reactivated_and_removed() {
    fixture()
        .given(team())
        .when(cmd(TenantCommand::SuspendMember {
            by: Actor::Member(ADMIN),
            member_id: ANALYST,
        }))
        .then_expect_events(vec![TenantEvent::MemberSuspended { member_id: ANALYST }]);
    let mut suspended = team();
    suspended.push(TenantEvent::MemberSuspended { member_id: ANALYST });
    fixture()
        .given(suspended.clone())
        .when(cmd(TenantCommand::ReactivateMember {
            by: Actor::Member(ADMIN),
            member_id: ANALYST,
        }))
        .then_expect_events(vec![TenantEvent::MemberReactivated { member_id: ANALYST }]);
    fixture()
        .given(suspended)
        .when(cmd(TenantCommand::RemoveMember {
            by: Actor::Member(OWNER),
            member_id: ANALYST,
        }))
        .then_expect_events(vec![TenantEvent::MemberRemoved { member_id: ANALYST }]);
}

#[test]
fn a_suspended_member_cannot_act() {
    let mut history = team();
    history.push(TenantEvent::MemberSuspended { member_id: ADMIN });
    fixture()
        .given(history)
        .when(invite(ADMIN, "new@acme.test", Role::Analyst))
        .then_expect_error(TenantError::Forbidden(
            "the acting member is not active in this tenant".into(),
        ));
}

#[test]
fn ownership_moves_only_by_transfer_from_the_owner_to_an_active_member() {
    fixture()
        .given(team())
        .when(cmd(TenantCommand::TransferOwnership {
            by: Actor::Member(ADMIN),
            to_member_id: ADMIN,
        }))
        .then_expect_error(TenantError::Forbidden("only the owner can transfer ownership".into()));
    let mut suspended = team();
    suspended.push(TenantEvent::MemberSuspended { member_id: ANALYST });
    fixture()
        .given(suspended)
        .when(cmd(TenantCommand::TransferOwnership {
            by: Actor::Member(OWNER),
            to_member_id: ANALYST,
        }))
        .then_expect_error(TenantError::Rule("ownership can only go to an active member".into()));
    fixture()
        .given(team())
        .when(cmd(TenantCommand::TransferOwnership {
            by: Actor::Member(OWNER),
            to_member_id: ANALYST,
        }))
        .then_expect_events(vec![TenantEvent::OwnershipTransferred {
            from_member_id: OWNER,
            to_member_id: ANALYST,
            previous_owner_role: Role::Admin,
        }]);
}

#[test]
fn after_a_transfer_there_is_exactly_one_owner() {
    let mut tenant = Tenant::default();
    for event in team() {
        cqrs_es::Aggregate::apply(&mut tenant, event);
    }
    cqrs_es::Aggregate::apply(
        &mut tenant,
        TenantEvent::OwnershipTransferred {
            from_member_id: OWNER,
            to_member_id: ANALYST,
            previous_owner_role: Role::Admin,
        },
    );
    let owners: Vec<_> = tenant
        .members
        .iter()
        .filter(|(_, m)| m.role == Role::Owner)
        .map(|(id, _)| *id)
        .collect();
    assert_eq!(owners, vec![ANALYST]);
    assert_eq!(tenant.owner, Some(ANALYST));
    assert_eq!(tenant.members[&OWNER].role, Role::Admin);
}

#[test]
fn members_revoke_their_own_keys_and_admins_anyone_s() {
    fixture()
        .given(team())
        .when(cmd(TenantCommand::RevokeApiKey {
            by: Actor::Member(ANALYST),
            key_id: KEY,
        }))
        .then_expect_error(TenantError::Forbidden(
            "only an owner or admin can revoke others' keys".into(),
        ));
    fixture()
        .given(team())
        .when(cmd(TenantCommand::RevokeApiKey {
            by: Actor::Member(ADMIN),
            key_id: KEY,
        }))
        .then_expect_events(vec![TenantEvent::ApiKeyRevoked { key_id: KEY }]);
}

#[test]
fn a_suspended_tenant_refuses_member_writes() {
    let mut history = team();
    history.push(TenantEvent::TenantSuspended {
        reason: "unpaid".into(),
    });
    fixture()
        .given(history)
        .when(invite(OWNER, "new@acme.test", Role::Analyst))
        .then_expect_error(TenantError::Suspended);
}

#[test]
fn only_the_platform_admin_suspends_and_reactivates_a_tenant() {
    fixture()
        .given(team())
        .when(cmd(TenantCommand::Suspend {
            by: Actor::Member(OWNER),
            reason: "x".into(),
        }))
        .then_expect_error(TenantError::Forbidden("only the platform admin can do this".into()));
    fixture()
        .given(team())
        .when(cmd(TenantCommand::Suspend {
            by: Actor::PlatformAdmin,
            reason: "fraud review".into(),
        }))
        .then_expect_events(vec![TenantEvent::TenantSuspended {
            reason: "fraud review".into(),
        }]);
    let mut suspended = team();
    suspended.push(TenantEvent::TenantSuspended { reason: "x".into() });
    fixture()
        .given(suspended)
        .when(cmd(TenantCommand::Reactivate {
            by: Actor::PlatformAdmin,
        }))
        .then_expect_events(vec![TenantEvent::TenantReactivated {}]);
}

#[test]
fn a_cleared_profile_field_survives_serialization() {
    let event = TenantEvent::ProfileUpdated {
        name: None,
        industry: Some(None),
        company_size: None,
        contact_email: Some(Some(email("a@b.test"))),
        billing_email: None,
    };
    let json = serde_json::to_value(&event).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"ProfileUpdated": {"industry": null, "contact_email": "a@b.test"}})
    );
    assert_eq!(serde_json::from_value::<TenantEvent>(json).unwrap(), event);
}

#[test]
fn pending_invitations_count_against_the_member_limit() {
    // Owner + analyst + admin are 3 members; one pending invitation makes 4.
    let mut given = team();
    given.push(invited(Uuid::from_u128(23), "pending@acme.test", Role::Analyst));
    fixture()
        .given(given.clone())
        .when(invite_within(4, 24, "fifth@acme.test"))
        .then_expect_error(TenantError::LimitReached {
            metric: "members",
            used: 4,
            limit: 4,
        });
    fixture()
        .given(given)
        .when(invite_within(5, 24, "fifth@acme.test"))
        .then_expect_events(vec![TenantEvent::MemberInvited {
            invitation_id: Uuid::from_u128(24),
            email: email("fifth@acme.test"),
            role: Role::Analyst,
            token_hash: "token-24".into(),
            expires_at: start() + Duration::days(7),
        }]);
}

#[test]
fn removed_members_and_expired_invitations_free_their_seats() {
    let mut given = team();
    given.push(TenantEvent::MemberRemoved { member_id: ANALYST });
    given.push(TenantEvent::MemberInvited {
        invitation_id: Uuid::from_u128(23),
        email: email("old@acme.test"),
        role: Role::Analyst,
        token_hash: "token-23".into(),
        expires_at: start() - Duration::days(1),
    });
    fixture()
        .given(given)
        .when(invite_within(3, 24, "third@acme.test"))
        .then_expect_events(vec![TenantEvent::MemberInvited {
            invitation_id: Uuid::from_u128(24),
            email: email("third@acme.test"),
            role: Role::Analyst,
            token_hash: "token-24".into(),
            expires_at: start() + Duration::days(7),
        }]);
}

#[test]
fn accepting_is_refused_when_a_downgrade_took_the_invitations_seat() {
    let mut given = team();
    given.push(invited(INVITE, "new@acme.test", Role::Analyst));
    let accept_within = |limit| {
        cmd(TenantCommand::AcceptInvitation {
            invitation_id: INVITE,
            token_hash: format!("token-{INVITE}"),
            member_id: Uuid::from_u128(40),
            api_key: key(Uuid::from_u128(41)),
            member_limit: Limit::AtMost(limit),
        })
    };
    // Its own seat is held by the invitation: four seats are enough.
    fixture()
        .given(given.clone())
        .when(accept_within(4))
        .then_expect_events(vec![
            TenantEvent::InvitationAccepted {
                invitation_id: INVITE,
                member_id: Uuid::from_u128(40),
                email: email("new@acme.test"),
                role: Role::Analyst,
            },
            TenantEvent::ApiKeyCreated {
                key_id: Uuid::from_u128(41),
                member_id: Uuid::from_u128(40),
                name: Name::parse("default").unwrap(),
                prefix: "cwk_00000000".into(),
                secret_hash: "hash".into(),
            },
        ]);
    fixture()
        .given(given)
        .when(accept_within(3))
        .then_expect_error(TenantError::LimitReached {
            metric: "members",
            used: 3,
            limit: 3,
        });
}
