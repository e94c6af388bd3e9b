//! The CloudAccounts aggregate's decisions, one function per command.

use super::commands::{CloudAccountsCommand, NewAccount};
use super::error::CloudAccountsError;
use super::events::CloudAccountsEvent;
use super::state::{AccountStatus, CloudAccounts};
use crate::cloud::CloudServices;
use crate::cloud::values::AwsAccountId;
use crate::ids::TenantId;
use crate::plans::Limit;
use cqrs_es::Aggregate;
use cqrs_es::event_sink::EventSink;

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
        }?;
        crate::emit::emit(self, sink, [event]).await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        self.fold(event);
    }
}

impl CloudAccounts {
    fn connect(&self, tenant_id: TenantId, account: NewAccount, max_accounts: Limit) -> Decision {
        if self
            .accounts
            .get(&account.account_id)
            .is_some_and(|a| a.status == AccountStatus::Connected)
        {
            return Err(CloudAccountsError::Conflict(format!(
                "account {} is already connected",
                account.account_id
            )));
        }
        let used = self.connected();
        if let Limit::AtMost(limit) = max_accounts
            && !max_accounts.allows(used, 1)
        {
            return Err(CloudAccountsError::LimitReached { used, limit });
        }
        Ok(CloudAccountsEvent::CloudAccountConnected { tenant_id, account })
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
