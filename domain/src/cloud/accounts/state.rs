//! A tenant's cloud accounts as folded from their events.

use super::commands::NewAccount;
use super::events::CloudAccountsEvent;
use crate::cloud::values::AwsAccountId;
use crate::ids::OrganizationId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Where an account came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "organization_id")]
pub enum AccountSource {
    Standalone,
    Organization(OrganizationId),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountStatus {
    Connected,
    Disconnected,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountState {
    pub account: NewAccount,
    pub status: AccountStatus,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloudAccounts {
    pub version: u64,
    pub accounts: BTreeMap<AwsAccountId, AccountState>,
}

impl CloudAccounts {
    /// Accounts that count against the plan: connected ones only.
    pub fn connected(&self) -> u64 {
        self.accounts
            .values()
            .filter(|a| a.status == AccountStatus::Connected)
            .count() as u64
    }

    /// Folds one event (the aggregate's `apply`).
    pub(super) fn fold(&mut self, event: CloudAccountsEvent) {
        self.version += 1;
        match event {
            CloudAccountsEvent::CloudAccountConnected { account, .. } => {
                self.accounts.insert(
                    account.account_id.clone(),
                    AccountState {
                        account,
                        status: AccountStatus::Connected,
                    },
                );
            }
            CloudAccountsEvent::CloudAccountDisconnected { account_id, .. } => {
                if let Some(account) = self.accounts.get_mut(&account_id) {
                    account.status = AccountStatus::Disconnected;
                }
            }
        }
    }
}
