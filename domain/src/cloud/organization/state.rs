//! A cloud organization as folded from its events: the hierarchy and sources
//! the last discovery recorded, the tenant's member selection, and the
//! status derived from both.

use super::error::CloudOrganizationError;
use super::events::CloudOrganizationEvent;
use crate::cloud::hierarchy::{DiscoveredAccount, DiscoveredOu};
use crate::cloud::sources::{DelegatedAdministrator, OrganizationSource, ServiceControlPolicy};
use crate::cloud::values::OrganizationStatus;
use crate::ids::{OrganizationId, RunId, TenantId};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Where a member account stands in the tenant's selection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberLink {
    Connecting,
    Connected,
    Failed,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloudOrganization {
    pub version: u64,
    pub id: Option<OrganizationId>,
    pub tenant_id: Option<TenantId>,
    /// Derived from the last discovery and the selected members' connections.
    pub status: OrganizationStatus,
    /// The last discovery's own outcome (None before the first).
    pub discovery_status: Option<OrganizationStatus>,
    /// The hierarchy as the last discovery recorded it.
    pub ous: BTreeMap<String, DiscoveredOu>,
    pub accounts: BTreeMap<String, DiscoveredAccount>,
    pub delegated_administrators: Vec<DelegatedAdministrator>,
    pub policies: Vec<ServiceControlPolicy>,
    pub sources: BTreeMap<String, OrganizationSource>,
    /// Members the tenant selected for connection, and how that went.
    pub links: BTreeMap<String, MemberLink>,
    pub runs: BTreeSet<RunId>,
    /// Where scans of the members look (None: every enabled region).
    #[serde(default)]
    pub scan_regions: Option<BTreeSet<crate::cloud::values::Region>>,
}

impl CloudOrganization {
    /// Folds one event (the aggregate's `apply`).
    pub(super) fn fold(&mut self, event: CloudOrganizationEvent) {
        use CloudOrganizationEvent as E;
        self.version += 1;
        match event {
            E::CloudOrganizationRegistered {
                organization_id,
                tenant_id,
                ..
            } => {
                self.id = Some(organization_id);
                self.tenant_id = Some(tenant_id);
                self.status = OrganizationStatus::Pending;
            }
            E::OrganizationalUnitFound { ou } | E::OrganizationalUnitMoved { ou, .. } => {
                self.ous.insert(ou.id.clone(), ou);
            }
            E::OrganizationalUnitRemoved { id, .. } => {
                self.ous.remove(&id);
            }
            E::MemberAccountFound { account }
            | E::MemberAccountMoved { account, .. }
            | E::MemberAccountStatusChanged { account, .. } => {
                self.accounts.insert(account.id.clone(), account);
            }
            E::MemberAccountRemoved { id, .. } => {
                self.accounts.remove(&id);
                self.links.remove(&id);
            }
            E::DelegatedAdministratorsChanged { administrators } => self.delegated_administrators = administrators,
            E::ServiceControlPoliciesChanged { policies } => self.policies = policies,
            E::OrganizationSourceFound { source } | E::OrganizationSourceChanged { source } => {
                self.sources.insert(source.id.clone(), source);
            }
            E::OrganizationSourceRemoved { id, .. } => {
                self.sources.remove(&id);
            }
            E::MemberConnectionsRequested { account_ids } => {
                for id in account_ids {
                    self.links.insert(id, MemberLink::Connecting);
                }
            }
            E::MemberConnected { account_id } => {
                self.links.insert(account_id, MemberLink::Connected);
            }
            E::MemberConnectionFailed { account_id, .. } => {
                self.links.insert(account_id, MemberLink::Failed);
            }
            E::MemberDisconnected { account_id } => {
                self.links.remove(&account_id);
            }
            E::DiscoveryCompleted { run_id, status, .. } => {
                self.runs.insert(run_id);
                self.discovery_status = Some(status);
            }
            E::OrganizationStatusChanged { to, .. } => self.status = to,
            E::OrganizationScanRegionsSet { regions } => self.scan_regions = regions,
        }
    }

    pub(super) fn registered(&self) -> Result<(), CloudOrganizationError> {
        match self.id {
            Some(_) => Ok(()),
            None => Err(CloudOrganizationError::NotFound("cloud organization")),
        }
    }

    pub(super) fn member(&self, account_id: &str) -> Result<&DiscoveredAccount, CloudOrganizationError> {
        self.accounts
            .get(account_id)
            .ok_or(CloudOrganizationError::NotFound("member account"))
    }

    /// Error when discovery failed or every selected member failed; partial
    /// when discovery missed parts or some selected member failed.
    pub fn derived_status(&self) -> OrganizationStatus {
        let Some(discovery) = self.discovery_status else {
            return OrganizationStatus::Pending;
        };
        let failed = self.links.values().filter(|l| **l == MemberLink::Failed).count();
        if discovery == OrganizationStatus::Error || (failed > 0 && failed == self.links.len()) {
            OrganizationStatus::Error
        } else if discovery == OrganizationStatus::Partial || failed > 0 {
            OrganizationStatus::Partial
        } else {
            OrganizationStatus::Connected
        }
    }
}
