//! Connecting an organization's members: a saga over two aggregates. The
//! selection is recorded on the CloudOrganization first (connecting); then,
//! per account, its audit role is assumed (STS, the tenant's external id)
//! and the account connected on the tenant's CloudAccounts against the
//! plan's limit; each outcome is recorded back on the organization
//! (connected, failed with AWS's reason, or deselected when the plan refused
//! it). Every step is one command, so a crash between steps leaves states a
//! retry of the same request completes (a member already connected is
//! recorded as such, not connected twice). It runs within the request and
//! waits for the read models after each step, so the response shows the
//! members as they now are.

use crate::adapters::aws::Discovery;
use crate::consistency::ReadModels;
use crate::error::CommandError;
use crate::executor::{CloudAccountsCommands, CloudOrganizationCommands, RETRIES};
use crate::metadata::CommandMetadata;
use crate::services::BillingService;
use coverwatch_domain::cloud::values::{AwsAccountId, Environment, Region, RoleArn};
use coverwatch_domain::cloud::{
    AccountSource, CloudAccountsCommand, CloudAccountsError, CloudOrganizationCommand, CloudOrganizationError,
    NewAccount,
};
use coverwatch_domain::ids::{OrganizationId, TenantId};
use coverwatch_domain::plans::PlanCatalog;
use coverwatch_projections::cloud::queries::members_to_connect;
use sqlx::PgPool;
use std::sync::Arc;

pub struct ConnectMembers {
    pub aws: Discovery,
    pub accounts: Arc<CloudAccountsCommands>,
    pub organizations: Arc<CloudOrganizationCommands>,
    pub billing: Arc<BillingService>,
    pub catalog: Arc<PlanCatalog>,
    pub pool: PgPool,
    pub read_models: ReadModels,
}

/// Which members to connect.
#[derive(Debug, Clone)]
pub enum Selection {
    /// These accounts (each must be a discovered member).
    Accounts(Vec<String>),
    /// Every active member.
    AllActive,
    /// The active members of a subtree (`Root/Production`).
    Subtree(String),
}

/// What became of one member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberOutcome {
    Connected,
    AlreadyConnected,
    /// Its role could not be assumed (AWS's reason), or it is not active.
    Failed(String),
    /// The plan's account limit refused it.
    Refused {
        used: u64,
        limit: u64,
    },
}

/// Why connecting members was refused as a whole.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// A listed account is not a discovered member of the organization.
    #[error("member account {0} not found")]
    UnknownMember(String),
    #[error(transparent)]
    Command(#[from] CommandError),
}

impl From<sqlx::Error> for ConnectError {
    fn from(error: sqlx::Error) -> Self {
        Self::Command(error.into())
    }
}

impl From<CloudOrganizationError> for ConnectError {
    fn from(error: CloudOrganizationError) -> Self {
        Self::Command(error.into())
    }
}

/// How the connected accounts are described.
#[derive(Debug, Clone)]
pub struct Placement {
    pub environment: Environment,
    pub region: Region,
}

impl ConnectMembers {
    /// Connects the selected members of the tenant's organization; returns
    /// each member's outcome, by account id.
    pub async fn run(
        &self,
        tenant_id: TenantId,
        organization_id: OrganizationId,
        selection: Selection,
        placement: Placement,
        metadata: &CommandMetadata,
    ) -> Result<Vec<(String, MemberOutcome)>, ConnectError> {
        // The aggregate decides the plan rule when the selection is
        // recorded; asking it first spares AWS calls for a tenant without it.
        let org =
            super::organization_with_features(&self.pool, &self.billing, &self.catalog, tenant_id, organization_id)
                .await?;
        let (listed, prefix) = match &selection {
            Selection::Accounts(ids) => (Some(ids.as_slice()), None),
            Selection::AllActive => (None, None),
            Selection::Subtree(prefix) => (None, Some(prefix.trim_end_matches('/'))),
        };
        let members = members_to_connect(&self.pool, organization_id, listed, prefix).await?;
        if let Some(ids) = listed
            && let Some(unknown) = ids.iter().find(|id| !members.iter().any(|(m, _)| m == *id))
        {
            return Err(ConnectError::UnknownMember(unknown.clone()));
        }
        let mut results = vec![];
        // Suspended or closed accounts are refused up front; the rest are
        // selected (connecting) in the organization before any AWS call.
        let (active, inactive): (Vec<_>, Vec<_>) = members.into_iter().partition(|(_, status)| status == "ACTIVE");
        for (account_id, aws_status) in inactive {
            results.push((
                account_id,
                MemberOutcome::Failed(format!("the account is {aws_status}: it cannot be connected")),
            ));
        }
        let account_ids: Vec<String> = active.into_iter().map(|(id, _)| id).collect();
        if !account_ids.is_empty() {
            let command = CloudOrganizationCommand::RequestMemberConnections {
                account_ids: account_ids.clone(),
                // Read and checked above, in this request.
                org_features: true,
                cheapest_with_org_features: self.catalog.cheapest_with_org_features(),
            };
            self.organizations
                .execute_retrying(organization_id, command, metadata, RETRIES)
                .await?;
        }
        for account_id in account_ids {
            let outcome = self
                .connect_one(
                    tenant_id,
                    organization_id,
                    &account_id,
                    &org.member_role_name,
                    &org.external_id,
                    &placement,
                    metadata,
                )
                .await?;
            results.push((account_id, outcome));
        }
        Ok(results)
    }

    /// Assumes the member's audit role, connects it against the plan's limit
    /// and records the outcome in the organization.
    #[expect(clippy::too_many_arguments, reason = "one saga step's inputs")]
    async fn connect_one(
        &self,
        tenant_id: TenantId,
        organization_id: OrganizationId,
        account_id: &str,
        member_role: &str,
        external_id: &str,
        placement: &Placement,
        metadata: &CommandMetadata,
    ) -> Result<MemberOutcome, CommandError> {
        let role_arn = format!("arn:aws:iam::{account_id}:role/{member_role}");
        let (outcome, record) = match self.aws.verify_role(&role_arn, external_id).await {
            Err(reason) => (
                MemberOutcome::Failed(reason.clone()),
                CloudOrganizationCommand::RecordMemberFailure {
                    account_id: account_id.to_owned(),
                    reason,
                },
            ),
            Ok(()) => {
                let command = CloudAccountsCommand::Connect {
                    account: NewAccount {
                        account_id: AwsAccountId::parse(account_id).map_err(|e| anyhow::anyhow!(e))?,
                        alias: None,
                        region: placement.region.clone(),
                        role_arn: RoleArn::parse(&role_arn).map_err(|e| anyhow::anyhow!(e))?,
                        environment: placement.environment,
                        source: AccountSource::Organization(organization_id),
                    },
                    max_accounts: self.billing.entitlements(tenant_id).await?.max_accounts,
                };
                let connected = CloudOrganizationCommand::RecordMemberConnected {
                    account_id: account_id.to_owned(),
                };
                match self
                    .accounts
                    .execute_retrying(tenant_id, (tenant_id, command), metadata, RETRIES)
                    .await
                {
                    Ok(committed) => {
                        self.read_models.settle(committed).await;
                        (MemberOutcome::Connected, connected)
                    }
                    Err(CommandError::CloudAccounts(CloudAccountsError::Conflict(_))) => {
                        (MemberOutcome::AlreadyConnected, connected)
                    }
                    Err(CommandError::CloudAccounts(CloudAccountsError::LimitReached { used, limit })) => (
                        MemberOutcome::Refused { used, limit },
                        CloudOrganizationCommand::RecordMemberDisconnected {
                            account_id: account_id.to_owned(),
                        },
                    ),
                    Err(other) => return Err(other),
                }
            }
        };
        let committed = self
            .organizations
            .execute_retrying(organization_id, record, metadata, RETRIES)
            .await?;
        self.read_models.settle(committed).await;
        Ok(outcome)
    }
}
