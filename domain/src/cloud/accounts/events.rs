//! What happened to a tenant's cloud accounts (version 1.0).

use super::commands::NewAccount;
use crate::cloud::values::AwsAccountId;
use crate::ids::TenantId;
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

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
}

impl DomainEvent for CloudAccountsEvent {
    fn event_type(&self) -> String {
        match self {
            Self::CloudAccountConnected { .. } => "CloudAccountConnected",
            Self::CloudAccountDisconnected { .. } => "CloudAccountDisconnected",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        "1.0".to_owned()
    }
}
