//! A detection as folded from its events.

use super::events::DetectionEvent;
use super::values::{DetectionScope, Techniques};
use crate::ids::{DetectionId, TenantId};
use crate::values::Name;
use serde::{Deserialize, Serialize};

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
    pub id: Option<DetectionId>,
    pub tenant_id: Option<TenantId>,
    pub name: Option<Name>,
    pub techniques: Techniques,
    pub scope: Option<DetectionScope>,
    pub status: DetectionStatus,
    pub attack_version: String,
}

impl Detection {
    /// Folds one event (the aggregate's `apply`).
    pub(super) fn fold(&mut self, event: DetectionEvent) {
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
