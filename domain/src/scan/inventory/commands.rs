//! What may be asked of an account's inventory.

use crate::cloud::values::{AwsAccountId, Region};
use crate::ids::{RunId, TenantId};
use crate::scan::{Observation, Service};
use std::collections::BTreeSet;

#[derive(Debug, Clone, PartialEq)]
pub enum InventoryCommand {
    /// A scan's findings: `observations` in the (service, region) pairs it
    /// read completely (`read`); `regions` the regions in scope.
    RecordScan {
        tenant_id: TenantId,
        account_id: AwsAccountId,
        run_id: RunId,
        regions: BTreeSet<Region>,
        observations: Vec<Observation>,
        read: BTreeSet<(Service, Region)>,
    },
}
