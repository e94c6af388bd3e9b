//! One given/when/then test per Detection rule, and the coverage rules.

use super::coverage::{Applies, Breakdown, applies, covered, union_and_minimum};
use super::*;
use crate::attack::{Confidence, TechniqueId, TechniqueSet};
use crate::cloud::values::AwsAccountId;
use crate::ids::{DetectionId, OrganizationId, TenantId};
use crate::plans::Tier;
use crate::values::Name;
use cqrs_es::test::TestFramework;

const TENANT: TenantId = TenantId::from_u128(1);
const DETECTION: DetectionId = DetectionId::from_u128(2);
const ORG: OrganizationId = OrganizationId::from_u128(3);

fn detections() -> TestFramework<Detection> {
    TestFramework::with(DetectionServices::default())
}

fn techniques(list: &[(&str, f64)]) -> Techniques {
    list.iter()
        .map(|(t, c)| (TechniqueId::parse(t).unwrap(), Confidence::parse(*c).unwrap()))
        .collect()
}

fn account(id: &str) -> AwsAccountId {
    AwsAccountId::parse(id).unwrap()
}

fn account_scope() -> DetectionScope {
    DetectionScope::Account {
        account_id: account("111111111111"),
    }
}

fn org_scope(subset: Option<&[&str]>) -> DetectionScope {
    DetectionScope::Organization {
        organization_id: ORG,
        accounts: subset.map(|ids| ids.iter().map(|id| account(id)).collect()),
    }
}

fn register(scope: DetectionScope, org_features: bool) -> DetectionCommand {
    DetectionCommand::Register {
        detection_id: DETECTION,
        tenant_id: TENANT,
        name: Name::parse("Root login").unwrap(),
        source: DetectionSource::CloudtrailMetricFilter,
        techniques: techniques(&[("T1078.004", 0.9)]),
        scope,
        attack_version: "18.1".into(),
        derived_from: None,
        org_features,
        cheapest_with_org_features: Tier::Pro,
    }
}

fn registered(scope: DetectionScope) -> DetectionEvent {
    DetectionEvent::DetectionRegistered {
        detection_id: DETECTION,
        tenant_id: TENANT,
        name: Name::parse("Root login").unwrap(),
        source: DetectionSource::CloudtrailMetricFilter,
        techniques: techniques(&[("T1078.004", 0.9)]),
        scope,
        attack_version: "18.1".into(),
        derived_from: None,
    }
}

#[test]
fn an_account_detection_is_registered_with_its_attack_version() {
    detections()
        .given_no_previous_events()
        .when(register(account_scope(), false))
        .then_expect_events(vec![registered(account_scope())]);
}

#[test]
fn an_organization_detection_needs_organization_features() {
    detections()
        .given_no_previous_events()
        .when(register(org_scope(None), false))
        .then_expect_error(DetectionError::FeatureNotInPlan {
            feature: "organization-scoped detections",
            required_tier: Tier::Pro,
        });
}

#[test]
fn an_organization_detection_applies_to_all_or_a_non_empty_subset() {
    detections()
        .given_no_previous_events()
        .when(register(org_scope(Some(&[])), true))
        .then_expect_error(DetectionError::Rule(
            "an organization-scoped detection applies to all accounts or a non-empty subset".into(),
        ));
    detections()
        .given_no_previous_events()
        .when(register(org_scope(Some(&["111111111111"])), true))
        .then_expect_events(vec![registered(org_scope(Some(&["111111111111"])))]);
}

#[test]
fn techniques_must_be_in_the_catalog_and_at_least_one() {
    let mut command = register(account_scope(), false);
    if let DetectionCommand::Register { techniques: t, .. } = &mut command {
        *t = techniques(&[("T9999", 0.9)]);
    }
    detections()
        .given_no_previous_events()
        .when(command.clone())
        .then_expect_error(DetectionError::Rule("T9999 is not a technique of ATT&CK 18.1".into()));
    if let DetectionCommand::Register { techniques: t, .. } = &mut command {
        t.clear();
    }
    detections()
        .given_no_previous_events()
        .when(command)
        .then_expect_error(DetectionError::Rule("name at least one technique".into()));
}

#[test]
fn a_detection_is_registered_once() {
    detections()
        .given(vec![registered(account_scope())])
        .when(register(account_scope(), false))
        .then_expect_error(DetectionError::AlreadyRegistered);
}

#[test]
fn techniques_and_confidences_are_updated() {
    detections()
        .given(vec![registered(account_scope())])
        .when(update(
            None,
            Some(techniques(&[("T1078.004", 0.5), ("T1530", 0.6)])),
            None,
        ))
        .then_expect_events(vec![DetectionEvent::DetectionUpdated {
            name: Name::parse("Root login").unwrap(),
            techniques: techniques(&[("T1078.004", 0.5), ("T1530", 0.6)]),
        }]);
}

fn change_scope(scope: DetectionScope, org_features: bool) -> Option<ScopeChange> {
    Some(ScopeChange {
        scope,
        org_features,
        cheapest_with_org_features: Tier::Pro,
    })
}

fn update(name: Option<&str>, techniques: Option<Techniques>, scope: Option<ScopeChange>) -> DetectionCommand {
    DetectionCommand::Update {
        name: name.map(|n| Name::parse(n).unwrap()),
        techniques,
        scope,
    }
}

#[test]
fn changing_scope_to_the_organization_is_gated_and_recorded() {
    detections()
        .given(vec![registered(account_scope())])
        .when(update(None, None, change_scope(org_scope(None), false)))
        .then_expect_error(DetectionError::FeatureNotInPlan {
            feature: "organization-scoped detections",
            required_tier: Tier::Pro,
        });
    detections()
        .given(vec![registered(account_scope())])
        .when(update(None, None, change_scope(org_scope(None), true)))
        .then_expect_events(vec![DetectionEvent::DetectionScopeChanged {
            from: account_scope(),
            to: org_scope(None),
        }]);
}

#[test]
fn a_change_is_recorded_whole_or_not_at_all() {
    // New techniques with a scope the plan refuses: nothing is recorded.
    detections()
        .given(vec![registered(account_scope())])
        .when(update(
            None,
            Some(techniques(&[("T1530", 0.9)])),
            change_scope(org_scope(None), false),
        ))
        .then_expect_error(DetectionError::FeatureNotInPlan {
            feature: "organization-scoped detections",
            required_tier: Tier::Pro,
        });
    // Allowed: both parts, in one append.
    detections()
        .given(vec![registered(account_scope())])
        .when(update(
            None,
            Some(techniques(&[("T1530", 0.9)])),
            change_scope(org_scope(Some(&["111111111111"])), true),
        ))
        .then_expect_events(vec![
            DetectionEvent::DetectionUpdated {
                name: Name::parse("Root login").unwrap(),
                techniques: techniques(&[("T1530", 0.9)]),
            },
            DetectionEvent::DetectionScopeChanged {
                from: account_scope(),
                to: org_scope(Some(&["111111111111"])),
            },
        ]);
}

#[test]
fn an_empty_technique_list_is_refused_but_a_rename_keeps_the_techniques() {
    detections()
        .given(vec![registered(account_scope())])
        .when(update(None, Some(Techniques::new()), None))
        .then_expect_error(DetectionError::Rule("name at least one technique".into()));
    detections()
        .given(vec![registered(account_scope())])
        .when(update(Some("Root console login"), None, None))
        .then_expect_events(vec![DetectionEvent::DetectionUpdated {
            name: Name::parse("Root console login").unwrap(),
            techniques: techniques(&[("T1078.004", 0.9)]),
        }]);
}

#[test]
fn a_command_at_a_stale_version_is_refused() {
    let at = |version| DetectionCommand::AtVersion {
        version,
        command: Box::new(DetectionCommand::Disable),
    };
    detections()
        .given(vec![registered(account_scope()), DetectionEvent::DetectionDisabled])
        .when(at(1))
        .then_expect_error(DetectionError::VersionMismatch { expected: 1, actual: 2 });
    detections()
        .given(vec![registered(account_scope()), DetectionEvent::DetectionEnabled])
        .when(at(2))
        .then_expect_events(vec![DetectionEvent::DetectionDisabled]);
}

#[test]
fn disable_and_enable_are_recorded_once() {
    detections()
        .given(vec![registered(account_scope())])
        .when(DetectionCommand::Disable)
        .then_expect_events(vec![DetectionEvent::DetectionDisabled]);
    detections()
        .given(vec![registered(account_scope()), DetectionEvent::DetectionDisabled])
        .when(DetectionCommand::Disable)
        .then_expect_events(vec![]);
    detections()
        .given(vec![registered(account_scope()), DetectionEvent::DetectionDisabled])
        .when(DetectionCommand::Enable)
        .then_expect_events(vec![DetectionEvent::DetectionEnabled]);
}

#[test]
fn a_retired_detection_takes_no_more_commands() {
    detections()
        .given(vec![registered(account_scope()), DetectionEvent::DetectionRetired])
        .when(DetectionCommand::Enable)
        .then_expect_error(DetectionError::Retired);
}

#[test]
fn an_unknown_detection_is_not_found() {
    detections()
        .given_no_previous_events()
        .when(DetectionCommand::Disable)
        .then_expect_error(DetectionError::NotFound);
}

mod rules {
    use super::*;

    fn set(ids: &[&str]) -> TechniqueSet {
        let ids: Vec<TechniqueId> = ids.iter().map(|t| TechniqueId::parse(t).unwrap()).collect();
        crate::attack::latest().set_of(&ids)
    }

    #[test]
    fn organization_detections_are_inherited_by_the_accounts_in_their_scope() {
        let member = "111111111111";
        assert_eq!(applies(&account_scope(), member, Some(ORG)), Applies::Own);
        assert_eq!(applies(&account_scope(), "222222222222", Some(ORG)), Applies::No);
        assert_eq!(applies(&org_scope(None), member, Some(ORG)), Applies::Inherited);
        assert_eq!(
            applies(&org_scope(Some(&[member])), member, Some(ORG)),
            Applies::Inherited
        );
        assert_eq!(
            applies(&org_scope(Some(&["222222222222"])), member, Some(ORG)),
            Applies::No
        );
        // Another organization's, or a standalone account: nothing inherited.
        assert_eq!(
            applies(&org_scope(None), member, Some(OrganizationId::from_u128(9))),
            Applies::No
        );
        assert_eq!(applies(&org_scope(None), member, None), Applies::No);
    }

    #[test]
    fn a_technique_is_covered_from_exactly_six_tenths_and_only_when_enabled() {
        let detection = techniques(&[("T1078", 0.6), ("T1530", 0.599_999), ("T1098", 1.0)]);
        let enabled: Vec<&str> = covered(DetectionStatus::Enabled, &detection)
            .map(|t| t.as_str())
            .collect();
        assert_eq!(enabled, ["T1078", "T1098"]);
        assert_eq!(covered(DetectionStatus::Disabled, &detection).count(), 0);
        assert_eq!(covered(DetectionStatus::Retired, &detection).count(), 0);
    }

    #[test]
    fn the_breakdown_splits_account_organization_and_overlap_within_the_denominator() {
        let own = set(&["T1078", "T1530", "T1003"]);
        let inherited = set(&["T1530", "T1098"]);
        let denominator = set(&["T1078", "T1530", "T1098", "T1537"]);
        let breakdown = Breakdown::of(&own, &inherited, &denominator);
        assert_eq!(breakdown.covered, set(&["T1078", "T1098", "T1530"]));
        assert_eq!(breakdown.account_only, set(&["T1078"]));
        assert_eq!(breakdown.organization_only, set(&["T1098"]));
        assert_eq!(breakdown.overlap, set(&["T1530"]));
        assert_eq!(breakdown.total(), 0.75, "T1003 is outside the denominator");
    }

    #[test]
    fn union_is_any_account_and_minimum_is_every_account() {
        let a = set(&["T1078", "T1530"]);
        let b = set(&["T1530", "T1098"]);
        let (union, minimum) = union_and_minimum([&a, &b]);
        assert_eq!(union, set(&["T1078", "T1098", "T1530"]));
        assert_eq!(minimum, set(&["T1530"]));
        let (union, minimum) = union_and_minimum(std::iter::empty());
        assert!(union.is_empty() && minimum.is_empty());
    }
}
