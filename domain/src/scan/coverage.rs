//! How what a scan found counts for the account: the region rule.
//!
//! A regional capability (a GuardDuty detector or feature, a Security Hub
//! control, a Config rule, an analyzer...) covers the account only when it
//! is enabled in every region in scope: an attacker works where nothing
//! watches, so GuardDuty in three regions of four leaves the fourth open. A
//! global one (a CIS metric filter on the trail's log group, an EventBridge
//! rule on a global service's API) covers the account wherever it is.
//! What is missing is reported as gaps ("GuardDuty off in eu-west-3").

use super::mapping::{Scope, map};
use super::values::{Observation, Service};
use crate::attack::{COVERED_AT, MappedTechnique, TechniqueId};
use crate::cloud::values::Region;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// One capability found by the scan, with where it is and what it detects.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScanDetection {
    pub service: Service,
    pub kind: String,
    /// Where it is enabled (and its requirement too).
    pub regions: Vec<Region>,
    pub resources: Vec<String>,
    /// In scope but not there (empty for a global capability that is anywhere).
    pub missing_regions: Vec<Region>,
    /// Whether it covers the account (see the module's rule).
    pub covers: bool,
    pub techniques: Vec<MappedTechnique>,
    pub mapping_source: &'static str,
    pub mapping_version: String,
}

/// A service (or a feature of one) that is off in some regions in scope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Gap {
    pub service: Service,
    pub kind: String,
    pub missing_regions: Vec<Region>,
    pub message: String,
}

/// What the scan found, evaluated against the regions in scope.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Evaluation {
    pub detections: Vec<ScanDetection>,
    pub gaps: Vec<Gap>,
}

/// The kinds that say a service (or feature) is on in a region: their
/// absence from a region in scope is a gap.
fn enablement(service: Service, kind: &str) -> bool {
    matches!(
        (service, kind),
        (Service::Guardduty, "detector")
            | (Service::Securityhub, "hub")
            | (Service::Config, "recorder")
            | (Service::Accessanalyzer, "analyzer")
            | (Service::Inspector, "scanning")
            | (Service::Macie, "macie")
    ) || (service == Service::Guardduty && kind.starts_with("feature:"))
}

/// Reported even when off everywhere: the services coverage rests on.
fn essential(service: Service, kind: &str) -> bool {
    matches!(
        (service, kind),
        (Service::Guardduty, "detector") | (Service::Securityhub, "hub") | (Service::Config, "recorder")
    )
}

fn list(regions: &[Region]) -> String {
    regions.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", ")
}

impl Evaluation {
    /// The techniques the account is covered for by what the scan found.
    pub fn covered(&self) -> BTreeSet<TechniqueId> {
        self.detections
            .iter()
            .filter(|d| d.covers)
            .flat_map(|d| &d.techniques)
            .filter(|t| t.confidence.value() >= COVERED_AT)
            .map(|t| t.technique.clone())
            .collect()
    }
}

/// Evaluates an account's observations against the regions in scope.
pub fn evaluate<'a>(
    observations: impl IntoIterator<Item = &'a Observation>,
    in_scope: &BTreeSet<Region>,
) -> Evaluation {
    let mut found: BTreeMap<(Service, String), (BTreeSet<Region>, BTreeSet<String>)> = BTreeMap::new();
    for observation in observations.into_iter().filter(|o| o.enabled) {
        let entry = found
            .entry((observation.service, observation.kind.clone()))
            .or_default();
        entry.0.insert(observation.region.clone());
        entry.1.insert(observation.resource_id.clone());
    }
    let enabled_in = |service: Service, kind: &str| -> BTreeSet<Region> {
        found
            .get(&(service, kind.to_owned()))
            .map(|(regions, _)| regions.clone())
            .unwrap_or_default()
    };
    let mut evaluation = Evaluation::default();
    for ((service, kind), (regions, resources)) in &found {
        let mapped = map(*service, kind);
        let regions: BTreeSet<Region> = match mapped.requires {
            Some(required) => regions.intersection(&enabled_in(*service, required)).cloned().collect(),
            None => regions.clone(),
        };
        let missing: Vec<Region> = match mapped.scope {
            Scope::Global if !regions.is_empty() => vec![],
            _ => in_scope.difference(&regions).cloned().collect(),
        };
        let covers = !regions.is_empty() && missing.is_empty() && !in_scope.is_empty();
        evaluation.detections.push(ScanDetection {
            service: *service,
            kind: kind.clone(),
            regions: regions.into_iter().collect(),
            resources: resources.iter().cloned().collect(),
            missing_regions: missing,
            covers,
            techniques: mapped.techniques,
            mapping_source: mapped.source,
            mapping_version: mapped.version,
        });
    }
    // Gaps: enablement missing in some regions in scope.
    let mut kinds: BTreeSet<(Service, String)> = found
        .keys()
        .filter(|(service, kind)| enablement(*service, kind))
        .cloned()
        .collect();
    for (service, kind) in [
        (Service::Guardduty, "detector"),
        (Service::Securityhub, "hub"),
        (Service::Config, "recorder"),
    ] {
        kinds.insert((service, kind.to_owned()));
    }
    for (service, kind) in kinds {
        let there = enabled_in(service, &kind);
        if there.is_empty() && !essential(service, &kind) {
            continue;
        }
        let missing: Vec<Region> = in_scope.difference(&there).cloned().collect();
        if missing.is_empty() {
            continue;
        }
        let what = match kind.strip_prefix("feature:") {
            Some(feature) => format!("{} {feature}", service.display()),
            None => service.display().to_owned(),
        };
        let message = if there.is_empty() {
            format!("{what} off in every region in scope ({})", list(&missing))
        } else {
            format!("{what} off in {}", list(&missing))
        };
        evaluation.gaps.push(Gap {
            service,
            kind,
            missing_regions: missing,
            message,
        });
    }
    evaluation
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(r: &str) -> Region {
        Region::parse(r).unwrap()
    }

    fn seen(service: Service, r: &str, kind: &str) -> Observation {
        Observation {
            service,
            region: region(r),
            kind: kind.into(),
            resource_id: format!("{kind}-{r}"),
            enabled: true,
            detail: Default::default(),
        }
    }

    fn scope(regions: &[&str]) -> BTreeSet<Region> {
        regions.iter().map(|r| region(r)).collect()
    }

    #[test]
    fn a_regional_service_covers_the_account_only_when_on_in_every_region_in_scope() {
        let in_scope = scope(&["us-east-1", "eu-west-3"]);
        let only_one = [seen(Service::Guardduty, "us-east-1", "detector")];
        let evaluation = evaluate(&only_one, &in_scope);
        assert!(!evaluation.detections[0].covers);
        assert_eq!(evaluation.detections[0].missing_regions, [region("eu-west-3")]);
        assert!(evaluation.covered().is_empty());
        assert!(
            evaluation
                .gaps
                .iter()
                .any(|g| g.message == "GuardDuty off in eu-west-3")
        );
        let both = [
            seen(Service::Guardduty, "us-east-1", "detector"),
            seen(Service::Guardduty, "eu-west-3", "detector"),
        ];
        let evaluation = evaluate(&both, &in_scope);
        assert!(evaluation.detections[0].covers);
        assert!(evaluation.covered().contains(&TechniqueId::parse("T1110").unwrap()));
        assert!(!evaluation.gaps.iter().any(|g| g.service == Service::Guardduty));
    }

    #[test]
    fn a_global_capability_covers_from_one_region_and_a_config_rule_needs_its_recorder() {
        let in_scope = scope(&["us-east-1", "eu-west-3"]);
        let found = [
            seen(Service::Eventbridge, "us-east-1", "event:ConsoleLogin"),
            seen(Service::Config, "us-east-1", "rule:CLOUD_TRAIL_ENABLED"),
            seen(Service::Config, "eu-west-3", "rule:CLOUD_TRAIL_ENABLED"),
            seen(Service::Config, "us-east-1", "recorder"),
        ];
        let evaluation = evaluate(&found, &in_scope);
        let by_kind = |kind: &str| evaluation.detections.iter().find(|d| d.kind == kind).unwrap();
        assert!(by_kind("event:ConsoleLogin").covers);
        let rule = by_kind("rule:CLOUD_TRAIL_ENABLED");
        assert!(!rule.covers, "no recorder in eu-west-3");
        assert_eq!(rule.missing_regions, [region("eu-west-3")]);
        assert!(
            evaluation
                .gaps
                .iter()
                .any(|g| g.message == "AWS Config off in eu-west-3")
        );
        assert!(
            evaluation
                .gaps
                .iter()
                .any(|g| g.message.starts_with("Security Hub off in every region"))
        );
    }

    #[test]
    fn a_disabled_observation_is_inventory_but_covers_nothing() {
        let mut off = seen(Service::Guardduty, "us-east-1", "detector");
        off.enabled = false;
        let evaluation = evaluate(&[off], &scope(&["us-east-1"]));
        assert!(evaluation.detections.is_empty());
        assert!(evaluation.covered().is_empty());
    }
}
