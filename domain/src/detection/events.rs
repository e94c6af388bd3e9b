//! What happened to a detection (version 1.0).

use super::values::{DerivedFrom, DetectionScope, DetectionSource, Techniques};
use crate::ids::{DetectionId, TenantId};
use crate::values::Name;
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum DetectionEvent {
    DetectionRegistered {
        detection_id: DetectionId,
        tenant_id: TenantId,
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
