//! The CloudAccounts aggregate's decisions, one function per command.

use super::commands::{CloudAccountsCommand, NewAccount};
use super::error::CloudAccountsError;
use super::events::CloudAccountsEvent;
use super::state::{AccountStatus, CloudAccounts};
use crate::cloud::CloudServices;
use crate::cloud::values::{AwsAccountId, Region};
use crate::ids::TenantId;
use crate::plans::Limit;
use cqrs_es::Aggregate;
use cqrs_es::event_sink::EventSink;
use std::collections::BTreeSet;

type Decision = Result<CloudAccountsEvent, CloudAccountsError>;

impl Aggregate for CloudAccounts {
    const TYPE: &'static str = "cloud_accounts";
    /// With the tenant's id, which the events carry (the aggregate's id is
    /// the tenant's, but deciding code cannot see it).
    type Command = (TenantId, CloudAccountsCommand);
    type Event = CloudAccountsEvent;
    type Error = CloudAccountsError;
    type Services = CloudServices;

    async fn handle(
        &mut self,
        (tenant_id, command): Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let event = match command {
            CloudAccountsCommand::Connect { account, max_accounts } => self.connect(tenant_id, account, max_accounts),
            CloudAccountsCommand::Disconnect { account_id } => self.disconnect(tenant_id, account_id),
            CloudAccountsCommand::RecordConnectionFailure { account, reason } => {
                self.record_connection_failure(tenant_id, account, reason)
            }
            CloudAccountsCommand::SetScanRegions { account_id, regions } => {
                self.set_scan_regions(tenant_id, account_id, regions)
            }
        }?;
        crate::emit::emit(self, sink, [event]).await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        self.fold(event);
    }
}

impl CloudAccounts {
    /// Connecting (or failing to) needs the account not connected already.
    fn not_connected(&self, account_id: &AwsAccountId) -> Result<(), CloudAccountsError> {
        if self
            .accounts
            .get(account_id)
            .is_some_and(|a| a.status == AccountStatus::Connected)
        {
            return Err(CloudAccountsError::Conflict(format!(
                "account {account_id} is already connected"
            )));
        }
        Ok(())
    }

    fn connect(&self, tenant_id: TenantId, account: NewAccount, max_accounts: Limit) -> Decision {
        self.not_connected(&account.account_id)?;
        let used = self.connected();
        if let Limit::AtMost(limit) = max_accounts
            && !max_accounts.allows(used, 1)
        {
            return Err(CloudAccountsError::LimitReached { used, limit });
        }
        Ok(CloudAccountsEvent::CloudAccountConnected { tenant_id, account })
    }

    fn record_connection_failure(&self, tenant_id: TenantId, account: NewAccount, reason: String) -> Decision {
        self.not_connected(&account.account_id)?;
        Ok(CloudAccountsEvent::CloudAccountConnectionFailed {
            tenant_id,
            account,
            reason,
        })
    }

    fn set_scan_regions(
        &self,
        tenant_id: TenantId,
        account_id: AwsAccountId,
        regions: Option<BTreeSet<Region>>,
    ) -> Decision {
        let account = self
            .accounts
            .get(&account_id)
            .filter(|a| a.status == AccountStatus::Connected)
            .ok_or(CloudAccountsError::NotFound("connected cloud account"))?;
        if regions.as_ref().is_some_and(BTreeSet::is_empty) {
            return Err(CloudAccountsError::Rule(
                "name at least one region, or none to scan every enabled region".into(),
            ));
        }
        if account.scan_regions == regions {
            return Err(CloudAccountsError::Unchanged);
        }
        Ok(CloudAccountsEvent::AccountScanRegionsSet {
            tenant_id,
            account_id,
            regions,
        })
    }

    fn disconnect(&self, tenant_id: TenantId, account_id: AwsAccountId) -> Decision {
        let account = self
            .accounts
            .get(&account_id)
            .ok_or(CloudAccountsError::NotFound("cloud account"))?;
        if account.status == AccountStatus::Disconnected {
            return Err(CloudAccountsError::Conflict(format!(
                "account {account_id} is already disconnected"
            )));
        }
        Ok(CloudAccountsEvent::CloudAccountDisconnected { tenant_id, account_id })
    }
}
