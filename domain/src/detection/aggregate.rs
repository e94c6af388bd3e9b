//! The Detection aggregate (one per detection). Its scope is an invariant:
//! an account-scoped detection names exactly one account and no subset; an
//! organization-scoped one names the organization and either all of its
//! accounts or a non-empty subset. Organization scope needs the plan's
//! organization features. Techniques are validated against the catalog the
//! detection records (its ATT&CK version).

use super::DetectionServices;
use super::error::DetectionError;
use crate::attack::{Confidence, TechniqueId};
use crate::cloud::values::AwsAccountId;
use crate::plans::Tier;
use crate::values::Name;
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use uuid::Uuid;

/// Technique → confidence.
pub type Techniques = BTreeMap<TechniqueId, Confidence>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DetectionSource {
    Guardduty,
    SecurityhubControl,
    ConfigRule,
    CloudtrailMetricFilter,
    EventbridgeRule,
    SccFinding,
    LogSink,
    Custom,
}

impl DetectionSource {
    pub const ALL: [Self; 8] = [
        Self::Guardduty,
        Self::SecurityhubControl,
        Self::ConfigRule,
        Self::CloudtrailMetricFilter,
        Self::EventbridgeRule,
        Self::SccFinding,
        Self::LogSink,
        Self::Custom,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Guardduty => "guardduty",
            Self::SecurityhubControl => "securityhub_control",
            Self::ConfigRule => "config_rule",
            Self::CloudtrailMetricFilter => "cloudtrail_metric_filter",
            Self::EventbridgeRule => "eventbridge_rule",
            Self::SccFinding => "scc_finding",
            Self::LogSink => "log_sink",
            Self::Custom => "custom",
        }
    }

    pub fn parse(input: &str) -> Result<Self, String> {
        Self::ALL.into_iter().find(|s| s.as_str() == input).ok_or_else(|| {
            let names: Vec<&str> = Self::ALL.iter().map(|s| s.as_str()).collect();
            format!("source must be one of {}", names.join(", "))
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum DetectionScope {
    Account {
        account_id: AwsAccountId,
    },
    Organization {
        organization_id: Uuid,
        /// None: every account of the organization; else exactly these.
        accounts: Option<BTreeSet<AwsAccountId>>,
    },
}

impl DetectionScope {
    pub fn is_organization(&self) -> bool {
        matches!(self, Self::Organization { .. })
    }

    fn check(&self) -> Result<(), DetectionError> {
        match self {
            Self::Organization {
                accounts: Some(accounts),
                ..
            } if accounts.is_empty() => Err(DetectionError::Rule(
                "an organization-scoped detection applies to all accounts or a non-empty subset".into(),
            )),
            _ => Ok(()),
        }
    }
}

/// A detection Coverwatch registered for an organization-level source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DerivedFrom {
    pub organization_id: Uuid,
    /// The source's id (trail or aggregator ARN, `guardduty:<account>`).
    pub source_id: String,
    /// The CTID mapping set the techniques come from.
    pub mapping_version: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DetectionStatus {
    #[default]
    Enabled,
    Disabled,
    Retired,
}

impl DetectionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Enabled => "enabled",
            Self::Disabled => "disabled",
            Self::Retired => "retired",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    pub version: u64,
    pub id: Option<Uuid>,
    pub tenant_id: Option<Uuid>,
    pub name: Option<Name>,
    pub techniques: Techniques,
    pub scope: Option<DetectionScope>,
    pub status: DetectionStatus,
    pub attack_version: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum DetectionCommand {
    Register {
        detection_id: Uuid,
        tenant_id: Uuid,
        name: Name,
        source: DetectionSource,
        techniques: Techniques,
        scope: DetectionScope,
        /// The ATT&CK version the techniques were checked against.
        attack_version: String,
        derived_from: Option<DerivedFrom>,
        org_features: bool,
        cheapest_with_org_features: Tier,
    },
    /// New name, techniques and/or scope (None keeps each), decided together:
    /// a refused part refuses the whole change.
    Update {
        name: Option<Name>,
        techniques: Option<Techniques>,
        scope: Option<ScopeChange>,
    },
    Disable,
    Enable,
    Retire,
    /// The command, refused unless the detection is still at `version`
    /// (a client's `If-Match`): a stale edit is refused, not applied over
    /// another analyst's change.
    AtVersion {
        version: u64,
        command: Box<DetectionCommand>,
    },
}

/// A new scope, with what the plan allows at the time of the request.
#[derive(Debug, Clone, PartialEq)]
pub struct ScopeChange {
    pub scope: DetectionScope,
    pub org_features: bool,
    pub cheapest_with_org_features: Tier,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum DetectionEvent {
    DetectionRegistered {
        detection_id: Uuid,
        tenant_id: Uuid,
        name: Name,
        source: DetectionSource,
        techniques: Techniques,
        scope: DetectionScope,
        attack_version: String,
        derived_from: Option<DerivedFrom>,
    },
    DetectionUpdated {
        name: Name,
        techniques: Techniques,
    },
    DetectionScopeChanged {
        from: DetectionScope,
        to: DetectionScope,
    },
    DetectionDisabled,
    DetectionEnabled,
    DetectionRetired,
}

impl DomainEvent for DetectionEvent {
    fn event_type(&self) -> String {
        match self {
            Self::DetectionRegistered { .. } => "DetectionRegistered",
            Self::DetectionUpdated { .. } => "DetectionUpdated",
            Self::DetectionScopeChanged { .. } => "DetectionScopeChanged",
            Self::DetectionDisabled => "DetectionDisabled",
            Self::DetectionEnabled => "DetectionEnabled",
            Self::DetectionRetired => "DetectionRetired",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        "1.0".to_owned()
    }
}

fn org_gate(scope: &DetectionScope, org_features: bool, required_tier: Tier) -> Result<(), DetectionError> {
    if scope.is_organization() && !org_features {
        return Err(DetectionError::FeatureNotInPlan {
            feature: "organization-scoped detections",
            required_tier,
        });
    }
    scope.check()
}

/// Every technique must be in the catalog of `attack_version`.
fn check_techniques(techniques: &Techniques, attack_version: &str) -> Result<(), DetectionError> {
    let catalog = crate::attack::catalog(attack_version)
        .ok_or_else(|| DetectionError::Rule(format!("ATT&CK {attack_version} is not shipped")))?;
    if let Some(unknown) = techniques.keys().find(|t| catalog.get(t).is_none()) {
        return Err(DetectionError::Rule(format!(
            "{unknown} is not a technique of ATT&CK {attack_version}"
        )));
    }
    Ok(())
}

impl Detection {
    /// Every part is checked before anything is decided, so a change is
    /// recorded whole or not at all.
    fn update(
        &self,
        name: Option<Name>,
        techniques: Option<Techniques>,
        scope: Option<ScopeChange>,
    ) -> Result<Vec<DetectionEvent>, DetectionError> {
        let mut events = vec![];
        if name.is_some() || techniques.is_some() {
            // A derived detection of an unmappable source may keep no
            // technique, but nobody may set an empty list.
            if techniques.as_ref().is_some_and(Techniques::is_empty) {
                return Err(DetectionError::Rule("name at least one technique".into()));
            }
            let name = name.unwrap_or_else(|| self.name.clone().expect("registered"));
            let techniques = techniques.unwrap_or_else(|| self.techniques.clone());
            check_techniques(&techniques, &self.attack_version)?;
            if Some(&name) != self.name.as_ref() || techniques != self.techniques {
                events.push(DetectionEvent::DetectionUpdated { name, techniques });
            }
        }
        if let Some(ScopeChange {
            scope,
            org_features,
            cheapest_with_org_features,
        }) = scope
        {
            org_gate(&scope, org_features, cheapest_with_org_features)?;
            let from = self.scope.clone().expect("registered");
            if from != scope {
                events.push(DetectionEvent::DetectionScopeChanged { from, to: scope });
            }
        }
        Ok(events)
    }
}

impl Aggregate for Detection {
    const TYPE: &'static str = "detection";
    type Command = DetectionCommand;
    type Event = DetectionEvent;
    type Error = DetectionError;
    type Services = DetectionServices;

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        use DetectionCommand as C;
        use DetectionEvent as E;
        let (expected_version, command) = match command {
            C::AtVersion { version, command } => (Some(version), *command),
            command => (None, command),
        };
        if let C::Register {
            detection_id,
            tenant_id,
            name,
            source,
            techniques,
            scope,
            attack_version,
            derived_from,
            org_features,
            cheapest_with_org_features,
        } = command
        {
            if self.id.is_some() {
                return Err(DetectionError::AlreadyRegistered);
            }
            org_gate(&scope, org_features, cheapest_with_org_features)?;
            // Only a derived detection may map nothing (a log source CTID
            // does not map, such as an organization trail).
            if techniques.is_empty() && derived_from.is_none() {
                return Err(DetectionError::Rule("name at least one technique".into()));
            }
            check_techniques(&techniques, &attack_version)?;
            sink.write(
                E::DetectionRegistered {
                    detection_id,
                    tenant_id,
                    name,
                    source,
                    techniques,
                    scope,
                    attack_version,
                    derived_from,
                },
                self,
            )
            .await;
            return Ok(());
        }
        if self.id.is_none() {
            return Err(DetectionError::NotFound);
        }
        if let Some(expected) = expected_version
            && expected != self.version
        {
            return Err(DetectionError::VersionMismatch {
                expected,
                actual: self.version,
            });
        }
        if self.status == DetectionStatus::Retired {
            return Err(DetectionError::Retired);
        }
        let events = match command {
            C::Register { .. } | C::AtVersion { .. } => {
                return Err(DetectionError::Rule("a command cannot be nested here".into()));
            }
            C::Update {
                name,
                techniques,
                scope,
            } => self.update(name, techniques, scope)?,
            C::Disable if self.status == DetectionStatus::Disabled => vec![],
            C::Disable => vec![E::DetectionDisabled],
            C::Enable if self.status == DetectionStatus::Enabled => vec![],
            C::Enable => vec![E::DetectionEnabled],
            C::Retire => vec![E::DetectionRetired],
        };
        for event in events {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        use DetectionEvent as E;
        self.version += 1;
        match event {
            E::DetectionRegistered {
                detection_id,
                tenant_id,
                name,
                techniques,
                scope,
                attack_version,
                ..
            } => {
                self.id = Some(detection_id);
                self.tenant_id = Some(tenant_id);
                self.name = Some(name);
                self.techniques = techniques;
                self.scope = Some(scope);
                self.attack_version = attack_version;
                self.status = DetectionStatus::Enabled;
            }
            E::DetectionUpdated { name, techniques } => {
                self.name = Some(name);
                self.techniques = techniques;
            }
            E::DetectionScopeChanged { to, .. } => self.scope = Some(to),
            E::DetectionDisabled => self.status = DetectionStatus::Disabled,
            E::DetectionEnabled => self.status = DetectionStatus::Enabled,
            E::DetectionRetired => self.status = DetectionStatus::Retired,
        }
    }
}
