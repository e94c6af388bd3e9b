//! What may be asked of a detection.

use super::values::{DerivedFrom, DetectionScope, DetectionSource, Techniques};
use crate::ids::{DetectionId, TenantId};
use crate::plans::Tier;
use crate::values::Name;

#[derive(Debug, Clone, PartialEq)]
pub enum DetectionCommand {
    Register {
        detection_id: DetectionId,
        tenant_id: TenantId,
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
