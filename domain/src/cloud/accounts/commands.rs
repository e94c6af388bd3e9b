//! What may be asked of a tenant's cloud accounts.

use super::state::AccountSource;
use crate::cloud::values::{AwsAccountId, Environment, Region, RoleArn};
use crate::plans::Limit;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

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
    /// The account's role could not be assumed (AWS's reason): it is kept,
    /// in error, and counts for nothing until a connect succeeds.
    RecordConnectionFailure {
        account: NewAccount,
        reason: String,
    },
    /// Where scans of the account look (None: every enabled region).
    SetScanRegions {
        account_id: AwsAccountId,
        regions: Option<BTreeSet<Region>>,
    },
}
