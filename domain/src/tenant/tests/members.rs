//! Roles, member suspension and removal, ownership and API keys.

use super::*;

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
fn members_revoke_their_own_keys_and_admins_other_members_keys() {
    const ANALYST_KEY: ApiKeyId = ApiKeyId::from_u128(32);
    let mut given = team();
    given.push(TenantEvent::ApiKeyCreated {
        key_id: ANALYST_KEY,
        member_id: ANALYST,
        name: Name::parse("ci").unwrap(),
        prefix: "cwk_00000032".into(),
        secret_hash: "hash".into(),
    });
    fixture()
        .given(given.clone())
        .when(cmd(TenantCommand::RevokeApiKey {
            by: Actor::Member(ANALYST),
            key_id: ANALYST_KEY,
        }))
        .then_expect_events(vec![TenantEvent::ApiKeyRevoked { key_id: ANALYST_KEY }]);
    fixture()
        .given(given.clone())
        .when(cmd(TenantCommand::RevokeApiKey {
            by: Actor::Member(ADMIN),
            key_id: ANALYST_KEY,
        }))
        .then_expect_events(vec![TenantEvent::ApiKeyRevoked { key_id: ANALYST_KEY }]);
    let mut with_admin_key = given;
    with_admin_key.push(TenantEvent::ApiKeyCreated {
        key_id: ApiKeyId::from_u128(33),
        member_id: ADMIN,
        name: Name::parse("ops").unwrap(),
        prefix: "cwk_00000033".into(),
        secret_hash: "hash".into(),
    });
    fixture()
        .given(with_admin_key)
        .when(cmd(TenantCommand::RevokeApiKey {
            by: Actor::Member(ANALYST),
            key_id: ApiKeyId::from_u128(33),
        }))
        .then_expect_error(TenantError::Forbidden(
            "only an owner or admin can revoke others' keys".into(),
        ));
}

#[test]
fn only_the_owner_revokes_the_owners_keys() {
    for by in [ADMIN, ANALYST] {
        fixture()
            .given(team())
            .when(cmd(TenantCommand::RevokeApiKey {
                by: Actor::Member(by),
                key_id: KEY,
            }))
            .then_expect_error(TenantError::Forbidden(
                "only the owner revokes the owner's API keys".into(),
            ));
    }
    // The platform admin acts by impersonating the owner (recorded as such).
    fixture()
        .given(team())
        .when(cmd(TenantCommand::RevokeApiKey {
            by: Actor::Member(OWNER),
            key_id: KEY,
        }))
        .then_expect_events(vec![TenantEvent::ApiKeyRevoked { key_id: KEY }]);
}
