//! The CloudAccounts aggregate's application service: connecting standalone
//! accounts against the plan's account limit (decided again when a
//! concurrent connect wins, so the limit sees it) once their role is
//! assumed through STS (an account whose role cannot be is recorded in
//! error, with AWS's reason), disconnecting, which also deselects an
//! organization member in its organization, and where scans look.

use crate::adapters::aws::Discovery;
use crate::error::CommandError;
use crate::executor::{CloudAccountsCommands, CloudOrganizationCommands, Committed, RETRIES};
use crate::metadata::CommandMetadata;
use crate::services::billing::BillingService;
use crate::services::cloud_organizations::external_id;
use coverwatch_domain::cloud::values::{AwsAccountId, Region};
use coverwatch_domain::cloud::{
    AccountSource, CloudAccountsCommand, CloudAccountsError, CloudOrganizationCommand, NewAccount,
};
use coverwatch_domain::ids::{OrganizationId, TenantId};
use std::collections::BTreeSet;
use std::sync::Arc;

pub struct CloudAccountService {
    pub accounts: Arc<CloudAccountsCommands>,
    pub organizations: Arc<CloudOrganizationCommands>,
    pub billing: Arc<BillingService>,
    pub aws: Discovery,
}

/// How a connect went: connected, or recorded in error with AWS's reason.
pub struct Connection {
    pub committed: Committed,
    pub refused: Option<String>,
}

impl CloudAccountService {
    /// Connects an account against the plan's limit now, once its role is
    /// assumed with the tenant's external id (an organization member's was
    /// verified by its saga); one whose role cannot be is recorded in error.
    pub async fn connect(
        &self,
        tenant_id: TenantId,
        account: NewAccount,
        metadata: &CommandMetadata,
    ) -> Result<Connection, CommandError> {
        if account.source == AccountSource::Standalone
            && let Err(reason) = self
                .aws
                .verify_role(account.role_arn.as_str(), &external_id(tenant_id))
                .await
        {
            let command = CloudAccountsCommand::RecordConnectionFailure {
                account,
                reason: reason.clone(),
            };
            let committed = self
                .accounts
                .execute_retrying(tenant_id, (tenant_id, command), metadata, RETRIES)
                .await?;
            return Ok(Connection {
                committed,
                refused: Some(reason),
            });
        }
        let command = CloudAccountsCommand::Connect {
            account,
            max_accounts: self.billing.entitlements(tenant_id).await?.max_accounts,
        };
        let committed = self
            .accounts
            .execute_retrying(tenant_id, (tenant_id, command), metadata, RETRIES)
            .await?;
        Ok(Connection {
            committed,
            refused: None,
        })
    }

    /// Where scans of a connected account look (None: every enabled region);
    /// the same narrowing again changes nothing.
    pub async fn set_scan_regions(
        &self,
        tenant_id: TenantId,
        account_id: AwsAccountId,
        regions: Option<BTreeSet<Region>>,
        metadata: &CommandMetadata,
    ) -> Result<Committed, CommandError> {
        let command = CloudAccountsCommand::SetScanRegions { account_id, regions };
        match self
            .accounts
            .execute_retrying(tenant_id, (tenant_id, command), metadata, RETRIES)
            .await
        {
            Err(CommandError::CloudAccounts(CloudAccountsError::Unchanged)) => Ok(Committed {
                position: 0,
                version: self.accounts.load(tenant_id).await?.version,
            }),
            other => other,
        }
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
