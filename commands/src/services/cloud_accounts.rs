//! The CloudAccounts aggregate's application service: connecting standalone
//! accounts against the plan's account limit (decided again when a
//! concurrent connect wins, so the limit sees it), and disconnecting, which
//! also deselects an organization member in its organization.

use crate::error::CommandError;
use crate::executor::{CloudAccountsCommands, CloudOrganizationCommands, Committed, RETRIES};
use crate::metadata::CommandMetadata;
use crate::services::billing::BillingService;
use coverwatch_domain::cloud::values::AwsAccountId;
use coverwatch_domain::cloud::{AccountSource, CloudAccountsCommand, CloudOrganizationCommand, NewAccount};
use coverwatch_domain::ids::{OrganizationId, TenantId};
use std::sync::Arc;

pub struct CloudAccountService {
    pub accounts: Arc<CloudAccountsCommands>,
    pub organizations: Arc<CloudOrganizationCommands>,
    pub billing: Arc<BillingService>,
}

impl CloudAccountService {
    /// Connects an account against the plan's limit now.
    pub async fn connect(
        &self,
        tenant_id: TenantId,
        account: NewAccount,
        metadata: &CommandMetadata,
    ) -> Result<Committed, CommandError> {
        let command = CloudAccountsCommand::Connect {
            account,
            max_accounts: self.billing.entitlements(tenant_id).await?.max_accounts,
        };
        self.accounts
            .execute_retrying(tenant_id, (tenant_id, command), metadata, RETRIES)
            .await
    }

    /// Disconnects an account; an organization member is also deselected in
    /// its organization (found in the aggregate, not a read model that may
    /// lag). Returns the last commit.
    pub async fn disconnect(
        &self,
        tenant_id: TenantId,
        account_id: AwsAccountId,
        metadata: &CommandMetadata,
    ) -> Result<Committed, CommandError> {
        let command = CloudAccountsCommand::Disconnect {
            account_id: account_id.clone(),
        };
        let committed = self
            .accounts
            .execute_retrying(tenant_id, (tenant_id, command), metadata, RETRIES)
            .await?;
        let source = self
            .accounts
            .load(tenant_id)
            .await?
            .accounts
            .get(&account_id)
            .map(|state| state.account.source);
        match source {
            Some(AccountSource::Organization(organization_id)) => {
                let deselected = self.deselect(organization_id, account_id.as_str(), metadata).await?;
                Ok(if deselected.position > 0 { deselected } else { committed })
            }
            _ => Ok(committed),
        }
    }

    /// The member is no longer selected in its organization (also for one
    /// whose connection failed and that was never connected).
    pub async fn deselect(
        &self,
        organization_id: OrganizationId,
        account_id: &str,
        metadata: &CommandMetadata,
    ) -> Result<Committed, CommandError> {
        let command = CloudOrganizationCommand::RecordMemberDisconnected {
            account_id: account_id.to_owned(),
        };
        self.organizations
            .execute_retrying(organization_id, command, metadata, RETRIES)
            .await
    }
}
