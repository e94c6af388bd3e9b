//! The Detection aggregate's decisions, one function per command. A change is
//! checked whole before anything is decided, so it is recorded whole or not
//! at all; `AtVersion` refuses a stale edit before any decision.

use super::DetectionServices;
use super::commands::{DetectionCommand, ScopeChange};
use super::error::DetectionError;
use super::events::DetectionEvent;
use super::state::{Detection, DetectionStatus};
use super::values::{DetectionScope, Techniques};
use crate::plans::{Tier, require_org_features};
use crate::values::Name;
use cqrs_es::Aggregate;
use cqrs_es::event_sink::EventSink;

type Decision = Result<Vec<DetectionEvent>, DetectionError>;

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
        crate::emit::emit(self, sink, self.decide(command)?).await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        self.fold(event);
    }
}

impl Detection {
    fn decide(&self, command: DetectionCommand) -> Decision {
        use DetectionCommand as C;
        let (expected_version, command) = match command {
            C::AtVersion { version, command } => (Some(version), *command),
            command => (None, command),
        };
        if let C::Register { .. } = command {
            return self.register(command);
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
        match command {
            C::Register { .. } | C::AtVersion { .. } => {
                Err(DetectionError::Rule("a command cannot be nested here".into()))
            }
            C::Update {
                name,
                techniques,
                scope,
            } => self.update(name, techniques, scope),
            C::Disable => Ok(self.disable()),
            C::Enable => Ok(self.enable()),
            C::Retire => Ok(vec![DetectionEvent::DetectionRetired]),
        }
    }

    fn register(&self, command: DetectionCommand) -> Decision {
        let DetectionCommand::Register {
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
        else {
            unreachable!("only called with Register");
        };
        if self.id.is_some() {
            return Err(DetectionError::AlreadyRegistered);
        }
        org_gate(&scope, org_features, cheapest_with_org_features)?;
        // Only a derived detection may map nothing (a log source CTID does
        // not map, such as an organization trail).
        if techniques.is_empty() && derived_from.is_none() {
            return Err(DetectionError::Rule("name at least one technique".into()));
        }
        check_techniques(&techniques, &attack_version)?;
        Ok(vec![DetectionEvent::DetectionRegistered {
            detection_id,
            tenant_id,
            name,
            source,
            techniques,
            scope,
            attack_version,
            derived_from,
        }])
    }

    /// Every part is checked before anything is decided, so a change is
    /// recorded whole or not at all.
    fn update(&self, name: Option<Name>, techniques: Option<Techniques>, scope: Option<ScopeChange>) -> Decision {
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

    fn disable(&self) -> Vec<DetectionEvent> {
        match self.status {
            DetectionStatus::Disabled => vec![],
            _ => vec![DetectionEvent::DetectionDisabled],
        }
    }

    fn enable(&self) -> Vec<DetectionEvent> {
        match self.status {
            DetectionStatus::Enabled => vec![],
            _ => vec![DetectionEvent::DetectionEnabled],
        }
    }
}

/// Organization scope needs the plan's organization features; every scope
/// must keep its invariant.
fn org_gate(scope: &DetectionScope, org_features: bool, required_tier: Tier) -> Result<(), DetectionError> {
    if scope.is_organization() {
        require_org_features(org_features, required_tier, "organization-scoped detections")?;
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
