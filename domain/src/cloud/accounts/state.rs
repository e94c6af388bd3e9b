//! A tenant's cloud accounts as folded from their events.

use super::commands::NewAccount;
use super::events::CloudAccountsEvent;
use crate::cloud::values::{AwsAccountId, Region};
use crate::ids::OrganizationId;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

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
    /// Its role could not be assumed when it was connected.
    Error,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountState {
    pub account: NewAccount,
    pub status: AccountStatus,
    /// Where scans look (None: every enabled region).
    #[serde(default)]
    pub scan_regions: Option<BTreeSet<Region>>,
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

    /// An account (re)connected or failed: its narrowing stays.
    fn put(&mut self, account: NewAccount, status: AccountStatus) {
        let scan_regions = self
            .accounts
            .get(&account.account_id)
            .and_then(|a| a.scan_regions.clone());
        self.accounts.insert(
            account.account_id.clone(),
            AccountState {
                account,
                status,
                scan_regions,
            },
        );
    }

    /// Folds one event (the aggregate's `apply`).
    pub(super) fn fold(&mut self, event: CloudAccountsEvent) {
        self.version += 1;
        match event {
            CloudAccountsEvent::CloudAccountConnected { account, .. } => self.put(account, AccountStatus::Connected),
            CloudAccountsEvent::CloudAccountConnectionFailed { account, .. } => self.put(account, AccountStatus::Error),
            CloudAccountsEvent::CloudAccountDisconnected { account_id, .. } => {
                if let Some(account) = self.accounts.get_mut(&account_id) {
                    account.status = AccountStatus::Disconnected;
                }
            }
            CloudAccountsEvent::AccountScanRegionsSet {
                account_id, regions, ..
            } => {
                if let Some(account) = self.accounts.get_mut(&account_id) {
                    account.scan_regions = regions;
                }
            }
        }
    }
}
