//! What happened to an account's inventory. Every event is at version 1.0.

use crate::cloud::values::{AwsAccountId, Region};
use crate::ids::{RunId, TenantId};
use crate::scan::{Observation, ObservationKey};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum InventoryEvent {
    /// A scan found something new, something changed, something gone, or
    /// the regions in scope changed. One event per account scan, carrying
    /// the whole difference (a first scan of 1,000 accounts is 1,000
    /// events, not one per finding).
    InventoryChanged {
        tenant_id: TenantId,
        account_id: AwsAccountId,
        run_id: RunId,
        regions: BTreeSet<Region>,
        found: Vec<Observation>,
        changed: Vec<Observation>,
        removed: Vec<ObservationKey>,
    },
}

impl DomainEvent for InventoryEvent {
    fn event_type(&self) -> String {
        match self {
            Self::InventoryChanged { .. } => "InventoryChanged".into(),
        }
    }

    fn event_version(&self) -> String {
        "1.0".into()
    }
}
