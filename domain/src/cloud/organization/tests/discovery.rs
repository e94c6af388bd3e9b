//! Discovery runs, organization sources and member selection.

use super::*;
use crate::cloud::MemberLink;
use crate::cloud::OrganizationStatus;
use crate::cloud::hierarchy::{DiscoveredAccount, DiscoveredHierarchy, DiscoveredOu};
use crate::cloud::sources::*;
use crate::ids::RunId;

const RUN_1: RunId = RunId::from_u128(100);
const RUN_2: RunId = RunId::from_u128(101);

fn ou(id: &str, name: &str, parent: (&str, &[&str], &[&str])) -> DiscoveredOu {
    let (parent_id, names, ids) = parent;
    DiscoveredOu {
        id: id.into(),
        name: name.into(),
        parent_id: parent_id.into(),
        path_names: names.iter().map(|s| s.to_string()).chain([name.to_string()]).collect(),
        path_ids: ids.iter().map(|s| s.to_string()).chain([id.to_string()]).collect(),
    }
}

fn account(id: &str, status: &str, under: &DiscoveredOu) -> DiscoveredAccount {
    DiscoveredAccount {
        id: id.into(),
        name: format!("acct {id}"),
        email: format!("{id}@acme.test"),
        status: status.into(),
        parent_id: under.id.clone(),
        path_names: under.path_names.clone(),
        path_ids: under.path_ids.clone(),
    }
}

fn tree() -> (DiscoveredOu, DiscoveredOu, DiscoveredHierarchy) {
    let prod = ou("ou-prod", "Production", ("r-root", &["Root"], &["r-root"]));
    let web = ou(
        "ou-web",
        "Web",
        ("ou-prod", &["Root", "Production"], &["r-root", "ou-prod"]),
    );
    let hierarchy = DiscoveredHierarchy {
        root_id: "r-root".into(),
        ous: vec![prod.clone(), web.clone()],
        accounts: vec![account("111111111111", "ACTIVE", &web)],
    };
    (prod, web, hierarchy)
}

fn record(run_id: RunId, hierarchy: DiscoveredHierarchy, errors: Vec<String>) -> CloudOrganizationCommand {
    CloudOrganizationCommand::RecordDiscovery {
        run_id,
        found: Discovered {
            hierarchy,
            ..Discovered::default()
        },
        errors,
    }
}

fn first_run() -> Vec<CloudOrganizationEvent> {
    let (prod, web, hierarchy) = tree();
    vec![
        registered(),
        CloudOrganizationEvent::OrganizationalUnitFound { ou: prod },
        CloudOrganizationEvent::OrganizationalUnitFound { ou: web },
        CloudOrganizationEvent::MemberAccountFound {
            account: hierarchy.accounts[0].clone(),
        },
        CloudOrganizationEvent::DiscoveryCompleted {
            run_id: RUN_1,
            ous: 2,
            accounts: 1,
            errors: vec![],
            status: OrganizationStatus::Connected,
        },
        status_changed(OrganizationStatus::Pending, OrganizationStatus::Connected),
    ]
}

fn status_changed(from: OrganizationStatus, to: OrganizationStatus) -> CloudOrganizationEvent {
    CloudOrganizationEvent::OrganizationStatusChanged { from, to }
}

#[test]
fn a_first_discovery_records_what_it_found_with_paths() {
    let (_, _, hierarchy) = tree();
    let mut expected = first_run();
    expected.remove(0);
    organizations()
        .given(vec![registered()])
        .when(record(RUN_1, hierarchy, vec![]))
        .then_expect_events(expected);
}

#[test]
fn rediscovery_records_moves_status_changes_and_removals() {
    let (prod, web, _) = tree();
    // The account moved up to Production and a new suspended one appeared;
    // Web was deleted.
    let moved = account("111111111111", "ACTIVE", &prod);
    let suspended = account("222222222222", "SUSPENDED", &prod);
    assert!(!suspended.connectable());
    let second = DiscoveredHierarchy {
        root_id: "r-root".into(),
        ous: vec![prod.clone()],
        accounts: vec![moved.clone(), suspended.clone()],
    };
    organizations()
        .given(first_run())
        .when(record(RUN_2, second, vec![]))
        .then_expect_events(vec![
            CloudOrganizationEvent::MemberAccountMoved {
                from_path: "Root/Production/Web".into(),
                account: moved,
            },
            CloudOrganizationEvent::MemberAccountFound { account: suspended },
            CloudOrganizationEvent::OrganizationalUnitRemoved {
                id: web.id.clone(),
                path: "Root/Production/Web".into(),
            },
            CloudOrganizationEvent::DiscoveryCompleted {
                run_id: RUN_2,
                ous: 1,
                accounts: 2,
                errors: vec![],
                status: OrganizationStatus::Connected,
            },
        ]);
}

#[test]
fn a_partial_discovery_removes_nothing_and_is_partial() {
    let (prod, _, _) = tree();
    let partial = DiscoveredHierarchy {
        root_id: "r-root".into(),
        ous: vec![prod],
        accounts: vec![],
    };
    let errors = vec!["ou-web: AccessDenied".to_owned()];
    organizations()
        .given(first_run())
        .when(record(RUN_2, partial, errors.clone()))
        .then_expect_events(vec![
            CloudOrganizationEvent::DiscoveryCompleted {
                run_id: RUN_2,
                ous: 1,
                accounts: 0,
                errors,
                status: OrganizationStatus::Partial,
            },
            status_changed(OrganizationStatus::Connected, OrganizationStatus::Partial),
        ]);
}

#[test]
fn a_run_is_recorded_once() {
    let (_, _, hierarchy) = tree();
    organizations()
        .given(first_run())
        .when(record(RUN_1, hierarchy, vec![]))
        .then_expect_events(vec![]);
}

fn trail(logging: Option<bool>) -> OrganizationSource {
    OrganizationSource {
        id: "arn:aws:cloudtrail:us-east-1:123456789012:trail/org".into(),
        name: "org".into(),
        account_id: "123456789012".into(),
        detail: SourceDetail::CloudtrailOrganizationTrail {
            home_region: "us-east-1".into(),
            multi_region: true,
            logging,
            s3_bucket: Some("logs".into()),
        },
    }
}

fn guardduty() -> OrganizationSource {
    OrganizationSource {
        id: "guardduty:333333333333".into(),
        name: "GuardDuty".into(),
        account_id: "333333333333".into(),
        detail: SourceDetail::Guardduty {
            administrator_account_id: "333333333333".into(),
        },
    }
}

fn with_sources(sources: Vec<OrganizationSource>, unread: &[SourceKind]) -> CloudOrganizationCommand {
    let (_, _, hierarchy) = tree();
    CloudOrganizationCommand::RecordDiscovery {
        run_id: RUN_2,
        found: Discovered {
            hierarchy,
            sources,
            unread_source_kinds: unread.iter().copied().collect(),
            ..Discovered::default()
        },
        errors: vec![],
    }
}

fn completed() -> CloudOrganizationEvent {
    CloudOrganizationEvent::DiscoveryCompleted {
        run_id: RUN_2,
        ous: 2,
        accounts: 1,
        errors: vec![],
        status: OrganizationStatus::Connected,
    }
}

#[test]
fn sources_are_recorded_when_found_changed_or_gone() {
    let mut given = first_run();
    given.push(CloudOrganizationEvent::OrganizationSourceFound {
        source: trail(Some(true)),
    });
    given.push(CloudOrganizationEvent::OrganizationSourceFound { source: guardduty() });
    // The trail stopped logging; GuardDuty's administrator was removed.
    organizations()
        .given(given)
        .when(with_sources(vec![trail(Some(false))], &[]))
        .then_expect_events(vec![
            CloudOrganizationEvent::OrganizationSourceRemoved {
                id: "guardduty:333333333333".into(),
                kind: SourceKind::Guardduty,
            },
            CloudOrganizationEvent::OrganizationSourceChanged {
                source: trail(Some(false)),
            },
            completed(),
        ]);
}

#[test]
fn a_source_kind_that_could_not_be_read_keeps_what_it_had() {
    let mut given = first_run();
    given.push(CloudOrganizationEvent::OrganizationSourceFound { source: guardduty() });
    organizations()
        .given(given)
        .when(with_sources(vec![], &[SourceKind::Guardduty]))
        .then_expect_events(vec![completed()]);
}

#[test]
fn policies_and_delegated_administrators_are_recorded_only_when_they_change() {
    let policy = ServiceControlPolicy {
        id: "p-deny".into(),
        name: "DenyLeave".into(),
        aws_managed: false,
        targets: vec![PolicyTarget {
            target_id: "ou-prod".into(),
            kind: "ORGANIZATIONAL_UNIT".into(),
            name: "Production".into(),
        }],
    };
    let admin = DelegatedAdministrator {
        account_id: "333333333333".into(),
        name: "security".into(),
        service_principals: vec!["guardduty.amazonaws.com".into()],
    };
    let (_, _, hierarchy) = tree();
    let found = Discovered {
        hierarchy,
        delegated_administrators: Some(vec![admin.clone()]),
        policies: Some(vec![policy.clone()]),
        ..Discovered::default()
    };
    let mut given = first_run();
    given.push(CloudOrganizationEvent::DelegatedAdministratorsChanged {
        administrators: vec![admin],
    });
    organizations()
        .given(given)
        .when(CloudOrganizationCommand::RecordDiscovery {
            run_id: RUN_2,
            found,
            errors: vec![],
        })
        .then_expect_events(vec![
            CloudOrganizationEvent::ServiceControlPoliciesChanged { policies: vec![policy] },
            completed(),
        ]);
}

fn requested() -> Vec<CloudOrganizationEvent> {
    let mut events = first_run();
    events.push(CloudOrganizationEvent::MemberConnectionsRequested {
        account_ids: vec!["111111111111".into()],
    });
    events
}

#[test]
fn selecting_members_needs_organization_features() {
    organizations()
        .given(first_run())
        .when(CloudOrganizationCommand::RequestMemberConnections {
            account_ids: vec!["111111111111".into()],
            org_features: false,
            cheapest_with_org_features: Tier::Pro,
        })
        .then_expect_error(CloudOrganizationError::FeatureNotInPlan {
            feature: "organization features",
            required_tier: Tier::Pro,
        });
}

#[test]
fn only_discovered_active_members_can_be_selected() {
    organizations()
        .given(first_run())
        .when(CloudOrganizationCommand::RequestMemberConnections {
            account_ids: vec!["999999999999".into()],
            org_features: true,
            cheapest_with_org_features: Tier::Pro,
        })
        .then_expect_error(CloudOrganizationError::Rule(
            "999999999999 is not a discovered member account".into(),
        ));
    let (prod, _, _) = tree();
    let mut given = first_run();
    given.push(CloudOrganizationEvent::MemberAccountStatusChanged {
        from: "ACTIVE".into(),
        account: account("111111111111", "SUSPENDED", &prod),
    });
    organizations()
        .given(given)
        .when(CloudOrganizationCommand::RequestMemberConnections {
            account_ids: vec!["111111111111".into()],
            org_features: true,
            cheapest_with_org_features: Tier::Pro,
        })
        .then_expect_error(CloudOrganizationError::Rule(
            "111111111111 is SUSPENDED: it cannot be connected".into(),
        ));
}

#[test]
fn the_organization_is_in_error_when_every_selected_member_failed() {
    organizations()
        .given(requested())
        .when(CloudOrganizationCommand::RecordMemberFailure {
            account_id: "111111111111".into(),
            reason: "AccessDenied".into(),
        })
        .then_expect_events(vec![
            CloudOrganizationEvent::MemberConnectionFailed {
                account_id: "111111111111".into(),
                reason: "AccessDenied".into(),
            },
            status_changed(OrganizationStatus::Connected, OrganizationStatus::Error),
        ]);
}

#[test]
fn the_organization_is_partial_when_some_selected_members_failed() {
    let (_, web, _) = tree();
    let mut given = requested();
    given.push(CloudOrganizationEvent::MemberAccountFound {
        account: account("222222222222", "ACTIVE", &web),
    });
    given.push(CloudOrganizationEvent::MemberConnectionsRequested {
        account_ids: vec!["222222222222".into()],
    });
    given.push(CloudOrganizationEvent::MemberConnected {
        account_id: "111111111111".into(),
    });
    organizations()
        .given(given)
        .when(CloudOrganizationCommand::RecordMemberFailure {
            account_id: "222222222222".into(),
            reason: "AccessDenied".into(),
        })
        .then_expect_events(vec![
            CloudOrganizationEvent::MemberConnectionFailed {
                account_id: "222222222222".into(),
                reason: "AccessDenied".into(),
            },
            status_changed(OrganizationStatus::Connected, OrganizationStatus::Partial),
        ]);
}

#[test]
fn deselecting_the_failed_member_restores_the_status() {
    let mut given = requested();
    given.push(CloudOrganizationEvent::MemberConnectionFailed {
        account_id: "111111111111".into(),
        reason: "AccessDenied".into(),
    });
    given.push(status_changed(OrganizationStatus::Connected, OrganizationStatus::Error));
    organizations()
        .given(given.clone())
        .when(CloudOrganizationCommand::RecordMemberDisconnected {
            account_id: "111111111111".into(),
        })
        .then_expect_events(vec![
            CloudOrganizationEvent::MemberDisconnected {
                account_id: "111111111111".into(),
            },
            status_changed(OrganizationStatus::Error, OrganizationStatus::Connected),
        ]);
    let mut state = CloudOrganization::default();
    for event in given {
        cqrs_es::Aggregate::apply(&mut state, event);
    }
    assert_eq!(state.links["111111111111"], MemberLink::Failed);
}
