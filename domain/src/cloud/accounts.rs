//! The CloudAccounts aggregate: every cloud account a tenant connected, with
//! its status. Only connected accounts count against the plan's limit.

use super::CloudServices;
use super::error::CloudError;
use super::values::{AwsAccountId, Environment, Region, RoleArn};
use crate::plans::Limit;
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use uuid::Uuid;

/// Where an account came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "organization_id")]
pub enum AccountSource {
    Standalone,
    Organization(Uuid),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountStatus {
    Connected,
    Disconnected,
}

/// An account to connect, as the caller described it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewAccount {
    pub account_id: AwsAccountId,
    pub alias: Option<String>,
    pub region: Region,
    pub role_arn: RoleArn,
    pub environment: Environment,
    pub source: AccountSource,
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

#[derive(Debug, Clone, PartialEq)]
pub enum CloudAccountsCommand {
    /// `max_accounts` is the plan's limit now (from the subscription).
    Connect {
        account: NewAccount,
        max_accounts: Limit,
    },
    Disconnect {
        account_id: AwsAccountId,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CloudAccountsEvent {
    CloudAccountConnected { tenant_id: Uuid, account: NewAccount },
    CloudAccountDisconnected { tenant_id: Uuid, account_id: AwsAccountId },
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

impl CloudAccounts {
    /// Accounts that count against the plan: connected ones only.
    pub fn connected(&self) -> u64 {
        self.accounts
            .values()
            .filter(|a| a.status == AccountStatus::Connected)
            .count() as u64
    }
}

impl Aggregate for CloudAccounts {
    const TYPE: &'static str = "cloud_accounts";
    /// With the tenant's id, which the events carry (the aggregate's id is
    /// the tenant's, but deciding code cannot see it).
    type Command = (Uuid, CloudAccountsCommand);
    type Event = CloudAccountsEvent;
    type Error = CloudError;
    type Services = CloudServices;

    async fn handle(
        &mut self,
        (tenant_id, command): Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let event = match command {
            CloudAccountsCommand::Connect { account, max_accounts } => {
                if self
                    .accounts
                    .get(&account.account_id)
                    .is_some_and(|a| a.status == AccountStatus::Connected)
                {
                    return Err(CloudError::Conflict(format!(
                        "account {} is already connected",
                        account.account_id
                    )));
                }
                let used = self.connected();
                if let Limit::AtMost(limit) = max_accounts
                    && !max_accounts.allows(used, 1)
                {
                    return Err(CloudError::LimitReached { used, limit });
                }
                CloudAccountsEvent::CloudAccountConnected { tenant_id, account }
            }
            CloudAccountsCommand::Disconnect { account_id } => {
                let account = self
                    .accounts
                    .get(&account_id)
                    .ok_or(CloudError::NotFound("cloud account"))?;
                if account.status == AccountStatus::Disconnected {
                    return Err(CloudError::Conflict(format!(
                        "account {account_id} is already disconnected"
                    )));
                }
                CloudAccountsEvent::CloudAccountDisconnected { tenant_id, account_id }
            }
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
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
