//! The inventory as folded from its events.

use super::events::InventoryEvent;
use crate::cloud::values::{AwsAccountId, Region};
use crate::ids::TenantId;
use crate::scan::{Observation, ObservationKey};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// The aggregate's id: one inventory per connected account of a tenant.
pub fn inventory_id(tenant_id: TenantId, account_id: &AwsAccountId) -> String {
    format!("{tenant_id}:{account_id}")
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AccountInventory {
    pub version: u64,
    pub tenant_id: Option<TenantId>,
    pub account_id: Option<AwsAccountId>,
    pub regions: BTreeSet<Region>,
    /// Serialized as a list: JSON object keys must be strings.
    #[serde(with = "observations")]
    pub observations: BTreeMap<ObservationKey, Observation>,
}

mod observations {
    use super::*;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(map: &BTreeMap<ObservationKey, Observation>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(map.values())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<ObservationKey, Observation>, D::Error> {
        let list: Vec<Observation> = Vec::deserialize(d)?;
        Ok(list.into_iter().map(|o| (o.key(), o)).collect())
    }
}

impl AccountInventory {
    pub(super) fn fold(&mut self, event: InventoryEvent) {
        self.version += 1;
        match event {
            InventoryEvent::InventoryChanged {
                tenant_id,
                account_id,
                regions,
                found,
                changed,
                removed,
                ..
            } => {
                self.tenant_id = Some(tenant_id);
                self.account_id = Some(account_id);
                self.regions = regions;
                for key in removed {
                    self.observations.remove(&key);
                }
                for observation in found.into_iter().chain(changed) {
                    self.observations.insert(observation.key(), observation);
                }
            }
        }
    }
}
