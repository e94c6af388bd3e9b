//! The CloudOrganization aggregate: a tenant's AWS (or GCP) organization,
//! registered with the role Coverwatch assumes. Registering needs the plan's
//! organization features. Each discovery run is recorded as the changes it
//! found (hierarchy, delegated administrators, SCPs, organization sources);
//! the organization's status is derived from the last run and from the
//! connections of the members the tenant selected.

use super::CloudServices;
use super::error::CloudError;
use super::hierarchy::{DiscoveredAccount, DiscoveredHierarchy, DiscoveredOu, path};
use super::sources::{DelegatedAdministrator, Discovered, OrganizationSource, ServiceControlPolicy, SourceKind};
use super::values::{AwsAccountId, Provider, RoleArn};
use crate::plans::Tier;
use crate::values::Name;
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrganizationStatus {
    /// Registered; nothing discovered yet.
    #[default]
    Pending,
    Connected,
    Partial,
    Error,
}

impl OrganizationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Connected => "connected",
            Self::Partial => "partial",
            Self::Error => "error",
        }
    }
}

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
    pub id: Option<Uuid>,
    pub tenant_id: Option<Uuid>,
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
    pub runs: BTreeSet<Uuid>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum CloudOrganizationCommand {
    Register {
        organization_id: Uuid,
        tenant_id: Uuid,
        provider: Provider,
        external_org_id: String,
        management_account_id: AwsAccountId,
        role_arn: RoleArn,
        external_id: String,
        name: Name,
        /// The audit role's name in member accounts.
        member_role_name: String,
        /// Whether the tenant's plan has organization features now, and the
        /// cheapest tier that does (for the refusal).
        org_features: bool,
        cheapest_with_org_features: Tier,
    },
    /// The tenant selected these discovered members for connection.
    RequestMemberConnections { account_ids: Vec<String> },
    /// A member's audit role was assumed and the account connected.
    RecordMemberConnected { account_id: String },
    /// Connecting a member failed (its role could not be assumed, or it is
    /// not active); the reason is the member's status reason.
    RecordMemberFailure { account_id: String, reason: String },
    /// The tenant disconnected a member: it is no longer selected.
    RecordMemberDisconnected { account_id: String },
    /// What a discovery run found; `errors` are the parts it could not read.
    RecordDiscovery {
        run_id: Uuid,
        found: Discovered,
        errors: Vec<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CloudOrganizationEvent {
    CloudOrganizationRegistered {
        organization_id: Uuid,
        tenant_id: Uuid,
        provider: Provider,
        external_org_id: String,
        management_account_id: AwsAccountId,
        role_arn: RoleArn,
        external_id: String,
        name: Name,
        member_role_name: String,
    },
    OrganizationalUnitFound {
        ou: DiscoveredOu,
    },
    OrganizationalUnitMoved {
        from_path: String,
        ou: DiscoveredOu,
    },
    OrganizationalUnitRemoved {
        id: String,
        path: String,
    },
    MemberAccountFound {
        account: DiscoveredAccount,
    },
    MemberAccountMoved {
        from_path: String,
        account: DiscoveredAccount,
    },
    MemberAccountStatusChanged {
        from: String,
        account: DiscoveredAccount,
    },
    MemberAccountRemoved {
        id: String,
        path: String,
    },
    /// The whole set, recorded when it differs from the last one.
    DelegatedAdministratorsChanged {
        administrators: Vec<DelegatedAdministrator>,
    },
    /// The whole set of SCPs with their targets, when it differs.
    ServiceControlPoliciesChanged {
        policies: Vec<ServiceControlPolicy>,
    },
    OrganizationSourceFound {
        source: OrganizationSource,
    },
    OrganizationSourceChanged {
        source: OrganizationSource,
    },
    OrganizationSourceRemoved {
        id: String,
        kind: SourceKind,
    },
    MemberConnectionsRequested {
        account_ids: Vec<String>,
    },
    MemberConnected {
        account_id: String,
    },
    MemberConnectionFailed {
        account_id: String,
        reason: String,
    },
    MemberDisconnected {
        account_id: String,
    },
    DiscoveryCompleted {
        run_id: Uuid,
        ous: u64,
        accounts: u64,
        errors: Vec<String>,
        /// The run's own outcome.
        status: OrganizationStatus,
    },
    /// The organization's derived status moved.
    OrganizationStatusChanged {
        from: OrganizationStatus,
        to: OrganizationStatus,
    },
}

impl DomainEvent for CloudOrganizationEvent {
    fn event_type(&self) -> String {
        match self {
            Self::CloudOrganizationRegistered { .. } => "CloudOrganizationRegistered",
            Self::OrganizationalUnitFound { .. } => "OrganizationalUnitFound",
            Self::OrganizationalUnitMoved { .. } => "OrganizationalUnitMoved",
            Self::OrganizationalUnitRemoved { .. } => "OrganizationalUnitRemoved",
            Self::MemberAccountFound { .. } => "MemberAccountFound",
            Self::MemberAccountMoved { .. } => "MemberAccountMoved",
            Self::MemberAccountStatusChanged { .. } => "MemberAccountStatusChanged",
            Self::MemberAccountRemoved { .. } => "MemberAccountRemoved",
            Self::DelegatedAdministratorsChanged { .. } => "DelegatedAdministratorsChanged",
            Self::ServiceControlPoliciesChanged { .. } => "ServiceControlPoliciesChanged",
            Self::OrganizationSourceFound { .. } => "OrganizationSourceFound",
            Self::OrganizationSourceChanged { .. } => "OrganizationSourceChanged",
            Self::OrganizationSourceRemoved { .. } => "OrganizationSourceRemoved",
            Self::MemberConnectionsRequested { .. } => "MemberConnectionsRequested",
            Self::MemberConnected { .. } => "MemberConnected",
            Self::MemberConnectionFailed { .. } => "MemberConnectionFailed",
            Self::MemberDisconnected { .. } => "MemberDisconnected",
            Self::DiscoveryCompleted { .. } => "DiscoveryCompleted",
            Self::OrganizationStatusChanged { .. } => "OrganizationStatusChanged",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        "1.0".to_owned()
    }
}

/// An AWS organization id: `o-` and 10 to 32 lowercase letters or digits.
pub fn valid_aws_organization_id(input: &str) -> bool {
    input.strip_prefix("o-").is_some_and(|rest| {
        (10..=32).contains(&rest.len()) && rest.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    })
}

impl Aggregate for CloudOrganization {
    const TYPE: &'static str = "cloud_organization";
    type Command = CloudOrganizationCommand;
    type Event = CloudOrganizationEvent;
    type Error = CloudError;
    type Services = CloudServices;

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        use CloudOrganizationCommand as C;
        use CloudOrganizationEvent as E;
        let events = match command {
            C::Register {
                organization_id,
                tenant_id,
                provider,
                external_org_id,
                management_account_id,
                role_arn,
                external_id,
                name,
                member_role_name,
                org_features,
                cheapest_with_org_features,
            } => {
                if !org_features {
                    return Err(CloudError::FeatureNotInPlan {
                        feature: "organization features",
                        required_tier: cheapest_with_org_features,
                    });
                }
                if self.id.is_some() {
                    return Err(CloudError::Conflict("the organization is already registered".into()));
                }
                if provider == Provider::Gcp {
                    return Err(CloudError::Rule("GCP organizations are not supported yet".into()));
                }
                if !valid_aws_organization_id(&external_org_id) {
                    return Err(CloudError::Rule(
                        "organization_id must be an AWS organization id such as o-a1b2c3d4e5".into(),
                    ));
                }
                let role_name_ok = (1..=64).contains(&member_role_name.len())
                    && member_role_name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-".contains(&b));
                if !role_name_ok {
                    return Err(CloudError::Rule(
                        "member_role_name must be an IAM role name (1 to 64 of letters, digits and +=,.@_-)".into(),
                    ));
                }
                if role_arn.account_id() != management_account_id.as_str() {
                    return Err(CloudError::Rule("the role must live in the management account".into()));
                }
                vec![E::CloudOrganizationRegistered {
                    organization_id,
                    tenant_id,
                    provider,
                    external_org_id,
                    management_account_id,
                    role_arn,
                    external_id,
                    name,
                    member_role_name,
                }]
            }
            C::RequestMemberConnections { account_ids } => {
                self.registered()?;
                if let Some(unknown) = account_ids.iter().find(|id| !self.accounts.contains_key(*id)) {
                    return Err(CloudError::Rule(format!(
                        "{unknown} is not a discovered member account"
                    )));
                }
                if let Some(closed) = account_ids.iter().find(|id| !self.accounts[*id].connectable()) {
                    return Err(CloudError::Rule(format!(
                        "{closed} is {}: it cannot be connected",
                        self.accounts[closed].status
                    )));
                }
                vec![E::MemberConnectionsRequested { account_ids }]
            }
            C::RecordMemberConnected { account_id } => {
                self.member(&account_id)?;
                if self.links.get(&account_id) == Some(&MemberLink::Connected) {
                    return Ok(());
                }
                vec![E::MemberConnected { account_id }]
            }
            C::RecordMemberFailure { account_id, reason } => {
                self.member(&account_id)?;
                vec![E::MemberConnectionFailed { account_id, reason }]
            }
            C::RecordMemberDisconnected { account_id } => {
                if !self.links.contains_key(&account_id) {
                    return Ok(());
                }
                vec![E::MemberDisconnected { account_id }]
            }
            C::RecordDiscovery { run_id, found, errors } => {
                self.registered()?;
                if self.runs.contains(&run_id) {
                    return Ok(());
                }
                self.changes(run_id, found, errors)
            }
        };
        for event in events {
            sink.write(event, self).await;
        }
        // The status is derived: record it whenever the events moved it.
        let derived = self.derived_status();
        if derived != self.status {
            sink.write(
                E::OrganizationStatusChanged {
                    from: self.status,
                    to: derived,
                },
                self,
            )
            .await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
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
        }
    }
}

impl CloudOrganization {
    fn registered(&self) -> Result<(), CloudError> {
        match self.id {
            Some(_) => Ok(()),
            None => Err(CloudError::NotFound("cloud organization")),
        }
    }

    fn member(&self, account_id: &str) -> Result<&DiscoveredAccount, CloudError> {
        self.accounts
            .get(account_id)
            .ok_or(CloudError::NotFound("member account"))
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

    /// The events that turn the recorded organization into `found`. Nothing
    /// is removed from a part that could not be read: absence there means
    /// nothing.
    fn changes(&self, run_id: Uuid, found: Discovered, errors: Vec<String>) -> Vec<CloudOrganizationEvent> {
        use CloudOrganizationEvent as E;
        let status = found.outcome(&errors);
        let hierarchy = &found.hierarchy;
        let mut events = self.hierarchy_changes(hierarchy, errors.is_empty());
        if let Some(mut administrators) = found.delegated_administrators {
            administrators.sort();
            if administrators != self.delegated_administrators {
                events.push(E::DelegatedAdministratorsChanged { administrators });
            }
        }
        if let Some(mut policies) = found.policies {
            policies.sort();
            if policies != self.policies {
                events.push(E::ServiceControlPoliciesChanged { policies });
            }
        }
        let seen: BTreeSet<&str> = found.sources.iter().map(|s| s.id.as_str()).collect();
        for (id, known) in &self.sources {
            if !seen.contains(id.as_str()) && !found.unread_source_kinds.contains(&known.kind()) {
                events.push(E::OrganizationSourceRemoved {
                    id: id.clone(),
                    kind: known.kind(),
                });
            }
        }
        for source in found.sources {
            match self.sources.get(&source.id) {
                None => events.push(E::OrganizationSourceFound { source }),
                Some(known) if *known != source => events.push(E::OrganizationSourceChanged { source }),
                Some(_) => {}
            }
        }
        events.push(E::DiscoveryCompleted {
            run_id,
            ous: hierarchy.ous.len() as u64,
            accounts: hierarchy.accounts.len() as u64,
            errors,
            status,
        });
        events
    }

    fn hierarchy_changes(&self, found: &DiscoveredHierarchy, complete: bool) -> Vec<CloudOrganizationEvent> {
        use CloudOrganizationEvent as E;
        let mut events = vec![];
        for ou in &found.ous {
            match self.ous.get(&ou.id) {
                None => events.push(E::OrganizationalUnitFound { ou: ou.clone() }),
                Some(known) if known != ou => events.push(E::OrganizationalUnitMoved {
                    from_path: path(&known.path_names),
                    ou: ou.clone(),
                }),
                Some(_) => {}
            }
        }
        for account in &found.accounts {
            match self.accounts.get(&account.id) {
                None => events.push(E::MemberAccountFound {
                    account: account.clone(),
                }),
                Some(known) if known.path_ids != account.path_ids => events.push(E::MemberAccountMoved {
                    from_path: path(&known.path_names),
                    account: account.clone(),
                }),
                Some(known) if known != account => events.push(E::MemberAccountStatusChanged {
                    from: known.status.clone(),
                    account: account.clone(),
                }),
                Some(_) => {}
            }
        }
        if complete {
            let seen_ous: BTreeSet<&str> = found.ous.iter().map(|o| o.id.as_str()).collect();
            for (id, ou) in &self.ous {
                if !seen_ous.contains(id.as_str()) {
                    events.push(E::OrganizationalUnitRemoved {
                        id: id.clone(),
                        path: path(&ou.path_names),
                    });
                }
            }
            let seen: BTreeSet<&str> = found.accounts.iter().map(|a| a.id.as_str()).collect();
            for (id, account) in &self.accounts {
                if !seen.contains(id.as_str()) {
                    events.push(E::MemberAccountRemoved {
                        id: id.clone(),
                        path: path(&account.path_names),
                    });
                }
            }
        }
        events
    }
}
