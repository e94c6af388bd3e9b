//! What happened to a tenant's cloud accounts (version 1.0).

use super::commands::NewAccount;
use crate::cloud::values::{AwsAccountId, Region};
use crate::ids::TenantId;
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CloudAccountsEvent {
    CloudAccountConnected {
        tenant_id: TenantId,
        account: NewAccount,
    },
    CloudAccountDisconnected {
        tenant_id: TenantId,
        account_id: AwsAccountId,
    },
    /// Connecting failed: the role could not be assumed (AWS's reason).
    CloudAccountConnectionFailed {
        tenant_id: TenantId,
        account: NewAccount,
        reason: String,
    },
    AccountScanRegionsSet {
        tenant_id: TenantId,
        account_id: AwsAccountId,
        regions: Option<BTreeSet<Region>>,
    },
}

impl DomainEvent for CloudAccountsEvent {
    fn event_type(&self) -> String {
        match self {
            Self::CloudAccountConnected { .. } => "CloudAccountConnected",
            Self::CloudAccountDisconnected { .. } => "CloudAccountDisconnected",
            Self::CloudAccountConnectionFailed { .. } => "CloudAccountConnectionFailed",
            Self::AccountScanRegionsSet { .. } => "AccountScanRegionsSet",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        "1.0".to_owned()
    }
}
