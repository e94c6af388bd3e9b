//! Creation, hierarchy, versions, the profile, deletion and suspension.

use super::*;

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
    let root = TenantId::from_u128(100);
    let parent = TenantId::from_u128(101);
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
    let ancestors: Vec<TenantId> = (100..103).map(TenantId::from_u128).collect();
    // Parent at level 4 (three ancestors above it): the child is level 5.
    fixture()
        .given_no_previous_events()
        .when(create_command(Some(ParentTenant {
            id: TenantId::from_u128(103),
            hierarchy_path: ancestors.clone(),
        })))
        .inspect_result()
        .expect("level 5 is allowed");
    let mut deeper = ancestors;
    deeper.push(TenantId::from_u128(103));
    fixture()
        .given_no_previous_events()
        .when(create_command(Some(ParentTenant {
            id: TenantId::from_u128(104),
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
