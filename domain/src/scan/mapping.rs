//! Observations → ATT&CK techniques, from the data shipped in
//! `domain/data/scanning/` (rule level: GuardDuty finding types by feature,
//! Security Hub controls, Config managed rules, CIS metric filters,
//! EventBridge rules on CloudTrail API events) and the CTID mappings
//! (service level: Security Hub, Config, Inspector, IAM Access Analyzer).
//! Every file names its source, version and licence; all of them here are
//! the product's own judgement, and say so.

use super::values::Service;
use crate::attack::{AttackCatalog, Confidence, MappedTechnique, TechniqueId, ctid_mappings};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::LazyLock;

/// How an observation counts across the regions of an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Covers the account only where it is deployed: it must be in every
    /// region in scope.
    Regional,
    /// Covers the whole account wherever it is (a CIS metric filter on the
    /// trail's log group, a rule on a global service's API).
    Global,
}

/// What an observation detects, and where that comes from.
#[derive(Debug, Clone, PartialEq)]
pub struct Mapped {
    pub techniques: Vec<MappedTechnique>,
    /// The mapping data it comes from (a file name, or `ctid`).
    pub source: &'static str,
    pub version: String,
    pub scope: Scope,
    /// A kind of the same service that must be enabled in the same region
    /// for this one to count (a Config rule needs a recording recorder).
    pub requires: Option<&'static str>,
}

#[derive(Deserialize)]
struct Header {
    version: String,
}

#[derive(Deserialize)]
struct GuardDutyFile {
    #[serde(flatten)]
    header: Header,
    finding_types: Vec<FindingType>,
}

#[derive(Deserialize)]
struct FindingType {
    #[serde(rename = "type")]
    name: String,
    feature: String,
    techniques: Vec<(String, String)>,
}

#[derive(Deserialize)]
struct ControlsFile {
    #[serde(flatten)]
    header: Header,
    controls: Vec<Rule>,
}

#[derive(Deserialize)]
struct RulesFile {
    #[serde(flatten)]
    header: Header,
    rules: Vec<Rule>,
}

#[derive(Deserialize)]
struct Rule {
    id: String,
    techniques: Vec<(String, String)>,
}

#[derive(Deserialize)]
struct CisFile {
    #[serde(flatten)]
    header: Header,
    patterns: Vec<CisPattern>,
}

/// A CIS monitoring recommendation, recognised by the tokens its filter
/// pattern contains.
#[derive(Debug, Deserialize)]
pub struct CisPattern {
    pub id: String,
    pub name: String,
    tokens: Vec<String>,
    techniques: Vec<(String, String)>,
}

#[derive(Deserialize)]
struct EventsFile {
    #[serde(flatten)]
    header: Header,
    global_event_sources: BTreeSet<String>,
    events: Vec<Event>,
}

#[derive(Deserialize)]
struct Event {
    name: String,
    source: String,
    techniques: Vec<(String, String)>,
}

struct Data {
    guardduty: GuardDutyFile,
    securityhub: ControlsFile,
    config: RulesFile,
    cis: CisFile,
    events: EventsFile,
}

/// One shipped file, parsed into its shape (a broken file is a build error
/// caught by the tests, never a silent gap).
fn load<T: serde::de::DeserializeOwned>(name: &str, text: &str) -> T {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("the shipped {name} parses into its shape: {e}"))
}

static DATA: LazyLock<Data> = LazyLock::new(|| Data {
    guardduty: load(
        "guardduty-finding-types.json",
        include_str!("../../data/scanning/guardduty-finding-types.json"),
    ),
    securityhub: load(
        "securityhub-controls.json",
        include_str!("../../data/scanning/securityhub-controls.json"),
    ),
    config: load(
        "config-managed-rules.json",
        include_str!("../../data/scanning/config-managed-rules.json"),
    ),
    cis: load(
        "cis-metric-filters.json",
        include_str!("../../data/scanning/cis-metric-filters.json"),
    ),
    events: load(
        "eventbridge-events.json",
        include_str!("../../data/scanning/eventbridge-events.json"),
    ),
});

fn confidence(value: &str) -> Option<Confidence> {
    let score = match value {
        "minimal" => 0.3,
        "partial" => 0.6,
        "significant" => 0.9,
        _ => return None,
    };
    Confidence::parse(score).ok()
}

/// The techniques of `pairs` that the catalog knows, the best score each.
fn techniques<'a>(pairs: impl IntoIterator<Item = &'a (String, String)>) -> Vec<MappedTechnique> {
    let catalog = crate::attack::latest();
    let mut best: BTreeMap<TechniqueId, Confidence> = BTreeMap::new();
    for (id, value) in pairs {
        let (Ok(id), Some(confidence)) = (TechniqueId::parse(id), confidence(value)) else {
            continue;
        };
        if catalog.get(&id).is_none() {
            continue;
        }
        let entry = best.entry(id).or_insert(confidence);
        if confidence.value() > entry.value() {
            *entry = confidence;
        }
    }
    best.into_iter()
        .map(|(technique, confidence)| MappedTechnique { technique, confidence })
        .collect()
}

fn ctid(control: &str) -> Mapped {
    Mapped {
        techniques: ctid_mappings().detect("aws", control, crate::attack::latest()),
        source: "ctid",
        version: ctid_mappings().version("aws"),
        scope: Scope::Regional,
        requires: None,
    }
}

fn nothing(source: &'static str, version: String, scope: Scope) -> Mapped {
    Mapped {
        techniques: vec![],
        source,
        version,
        scope,
        requires: None,
    }
}

/// GuardDuty's features by the names its API reports; the older name of
/// Runtime Monitoring is the same feature.
fn guardduty_feature(name: &str) -> &str {
    match name {
        "EKS_RUNTIME_MONITORING" => "RUNTIME_MONITORING",
        other => other,
    }
}

/// What an observation of `kind` in `service` detects (nothing, with the
/// source that says so, when it only records that something is there).
pub fn map(service: Service, kind: &str) -> Mapped {
    let data = &*DATA;
    match (service, kind.split_once(':')) {
        (Service::Guardduty, None) if kind == "detector" => guardduty_types(data, "FOUNDATIONAL"),
        (Service::Guardduty, Some(("feature", feature))) => guardduty_types(data, guardduty_feature(feature)),
        (Service::Securityhub, None) if kind == "hub" => ctid("aws_security_hub"),
        (Service::Securityhub, Some(("control", id))) => Mapped {
            techniques: techniques(
                data.securityhub
                    .controls
                    .iter()
                    .filter(|c| c.id == id)
                    .flat_map(|c| &c.techniques),
            ),
            source: "securityhub-controls.json",
            version: data.securityhub.header.version.clone(),
            scope: Scope::Regional,
            requires: Some("hub"),
        },
        (Service::Config, None) if kind == "recorder" => ctid("aws_config"),
        (Service::Config, Some(("rule", id))) => Mapped {
            techniques: techniques(
                data.config
                    .rules
                    .iter()
                    .filter(|r| r.id == id)
                    .flat_map(|r| &r.techniques),
            ),
            source: "config-managed-rules.json",
            version: data.config.header.version.clone(),
            scope: Scope::Regional,
            requires: Some("recorder"),
        },
        (Service::Cloudwatch, Some(("cis", id))) => Mapped {
            techniques: techniques(
                data.cis
                    .patterns
                    .iter()
                    .filter(|p| p.id == id)
                    .flat_map(|p| &p.techniques),
            ),
            source: "cis-metric-filters.json",
            version: data.cis.header.version.clone(),
            // The filter watches the trail's log group: every region the
            // trail logs (judgement: the account's trail is multi-region).
            scope: Scope::Global,
            requires: None,
        },
        (Service::Eventbridge, Some(("event", name))) => {
            let events: Vec<&Event> = data.events.events.iter().filter(|e| e.name == name).collect();
            let global = events
                .iter()
                .any(|e| data.events.global_event_sources.contains(&e.source));
            Mapped {
                techniques: techniques(events.iter().flat_map(|e| &e.techniques)),
                source: "eventbridge-events.json",
                version: data.events.header.version.clone(),
                scope: if global { Scope::Global } else { Scope::Regional },
                requires: None,
            }
        }
        (Service::Accessanalyzer, None) if kind == "analyzer" => ctid("aws_identity_and_access_management"),
        (Service::Inspector, None) if kind == "scanning" => ctid("amazon_inspector"),
        (Service::Cloudtrail, _) => nothing("ctid", ctid_mappings().version("aws"), Scope::Global),
        (Service::Macie, _) => nothing("ctid", ctid_mappings().version("aws"), Scope::Regional),
        (service, _) => nothing(
            "none",
            format!("{service}: recorded, mapped to nothing"),
            Scope::Regional,
        ),
    }
}

fn guardduty_types(data: &Data, feature: &str) -> Mapped {
    Mapped {
        techniques: techniques(
            data.guardduty
                .finding_types
                .iter()
                .filter(|t| t.feature == feature)
                .flat_map(|t| &t.techniques),
        ),
        source: "guardduty-finding-types.json",
        version: data.guardduty.header.version.clone(),
        scope: Scope::Regional,
        requires: None,
    }
}

/// The GuardDuty finding types a feature produces.
pub fn guardduty_finding_types(feature: &str) -> Vec<&'static str> {
    DATA.guardduty
        .finding_types
        .iter()
        .filter(|t| t.feature == guardduty_feature(feature))
        .map(|t| t.name.as_str())
        .collect()
}

/// The CIS recommendations a metric filter pattern matches.
pub fn recognise_cis(pattern: &str) -> Vec<&'static CisPattern> {
    let normalised: String = pattern.to_lowercase().chars().filter(|c| !c.is_whitespace()).collect();
    DATA.cis
        .patterns
        .iter()
        .filter(|p| p.tokens.iter().all(|t| normalised.contains(t.as_str())))
        .collect()
}

/// Whether an API name is one the EventBridge data maps.
pub fn mapped_event(name: &str) -> bool {
    DATA.events.events.iter().any(|e| e.name == name)
}

/// Every technique id the shipped files name (for the catalog check).
pub fn named_techniques() -> Vec<(&'static str, &'static str)> {
    let data = &*DATA;
    let mut all = vec![];
    let mut add = |file: &'static str, pairs: &'static [(String, String)]| {
        for (id, _) in pairs {
            all.push((file, id.as_str()));
        }
    };
    for t in &data.guardduty.finding_types {
        add("guardduty-finding-types.json", &t.techniques);
    }
    for c in &data.securityhub.controls {
        add("securityhub-controls.json", &c.techniques);
    }
    for r in &data.config.rules {
        add("config-managed-rules.json", &r.techniques);
    }
    for p in &data.cis.patterns {
        add("cis-metric-filters.json", &p.techniques);
    }
    for e in &data.events.events {
        add("eventbridge-events.json", &e.techniques);
    }
    all
}

/// The catalog every mapping is checked against.
pub fn unknown_techniques(catalog: &AttackCatalog) -> Vec<String> {
    named_techniques()
        .into_iter()
        .filter(|(_, id)| TechniqueId::parse(id).ok().and_then(|t| catalog.get(&t)).is_none())
        .map(|(file, id)| format!("{file}: {id}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_technique_the_data_names_is_in_the_shipped_catalog() {
        assert_eq!(unknown_techniques(crate::attack::latest()), Vec::<String>::new());
    }

    #[test]
    fn a_guardduty_feature_maps_the_finding_types_it_gates() {
        let s3 = map(Service::Guardduty, "feature:S3_DATA_EVENTS");
        assert!(s3.techniques.iter().any(|t| t.technique.as_str() == "T1530"));
        let foundational = map(Service::Guardduty, "detector");
        assert!(!foundational.techniques.iter().any(|t| t.technique.as_str() == "T1619"));
        assert_eq!(
            map(Service::Guardduty, "feature:EKS_RUNTIME_MONITORING"),
            map(Service::Guardduty, "feature:RUNTIME_MONITORING")
        );
    }

    #[test]
    fn cis_patterns_are_recognised_by_their_tokens() {
        let root = r#"{ $.userIdentity.type = "Root" && $.userIdentity.invokedBy NOT EXISTS && $.eventType != "AwsServiceEvent" }"#;
        assert_eq!(
            recognise_cis(root).iter().map(|p| p.id.as_str()).collect::<Vec<_>>(),
            ["root-usage"]
        );
        let trail = r#"{ ($.eventName = CreateTrail) || ($.eventName = UpdateTrail) || ($.eventName = DeleteTrail) || ($.eventName = StartLogging) || ($.eventName = StopLogging) }"#;
        assert_eq!(recognise_cis(trail)[0].id, "cloudtrail-changes");
        assert!(recognise_cis("{ $.eventName = RunInstances }").is_empty());
    }

    #[test]
    fn rules_on_global_apis_cover_every_region_and_config_rules_need_a_recorder() {
        assert_eq!(map(Service::Eventbridge, "event:ConsoleLogin").scope, Scope::Global);
        assert_eq!(map(Service::Eventbridge, "event:StopLogging").scope, Scope::Regional);
        assert_eq!(
            map(Service::Config, "rule:CLOUD_TRAIL_ENABLED").requires,
            Some("recorder")
        );
        assert!(map(Service::Macie, "macie").techniques.is_empty());
    }
}
