//! The CloudOrganization aggregate: a tenant's AWS (or GCP) organization,
//! registered with the role Coverwatch assumes. Registering needs the plan's
//! organization features. Discovery of its hierarchy is later work.

use super::CloudServices;
use super::error::CloudError;
use super::hierarchy::{DiscoveredAccount, DiscoveredHierarchy, DiscoveredOu, path};
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

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloudOrganization {
    pub version: u64,
    pub id: Option<Uuid>,
    pub tenant_id: Option<Uuid>,
    pub status: OrganizationStatus,
    /// The hierarchy as the last discovery recorded it.
    pub ous: BTreeMap<String, DiscoveredOu>,
    pub accounts: BTreeMap<String, DiscoveredAccount>,
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
    /// Connecting a member failed (its role could not be assumed, or it is
    /// not active); the reason is the member's status reason.
    RecordMemberFailure { account_id: String, reason: String },
    /// What a discovery run found; `errors` are the parts it could not read.
    RecordDiscovery {
        run_id: Uuid,
        hierarchy: DiscoveredHierarchy,
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
    MemberConnectionFailed {
        account_id: String,
        reason: String,
    },
    DiscoveryCompleted {
        run_id: Uuid,
        ous: u64,
        accounts: u64,
        errors: Vec<String>,
        status: OrganizationStatus,
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
            Self::MemberConnectionFailed { .. } => "MemberConnectionFailed",
            Self::DiscoveryCompleted { .. } => "DiscoveryCompleted",
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
        if let CloudOrganizationCommand::RecordMemberFailure { account_id, reason } = command {
            if !self.accounts.contains_key(&account_id) {
                return Err(CloudError::NotFound("member account"));
            }
            sink.write(
                CloudOrganizationEvent::MemberConnectionFailed { account_id, reason },
                self,
            )
            .await;
            return Ok(());
        }
        if let CloudOrganizationCommand::RecordDiscovery {
            run_id,
            hierarchy,
            errors,
        } = command
        {
            if self.id.is_none() {
                return Err(CloudError::NotFound("cloud organization"));
            }
            if self.runs.contains(&run_id) {
                return Ok(());
            }
            for event in self.changes(run_id, hierarchy, errors) {
                sink.write(event, self).await;
            }
            return Ok(());
        }
        let CloudOrganizationCommand::Register {
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
        } = command
        else {
            unreachable!("discovery is handled above");
        };
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
        sink.write(
            CloudOrganizationEvent::CloudOrganizationRegistered {
                organization_id,
                tenant_id,
                provider,
                external_org_id,
                management_account_id,
                role_arn,
                external_id,
                name,
                member_role_name,
            },
            self,
        )
        .await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        self.version += 1;
        match event {
            CloudOrganizationEvent::CloudOrganizationRegistered {
                organization_id,
                tenant_id,
                ..
            } => {
                self.id = Some(organization_id);
                self.tenant_id = Some(tenant_id);
                self.status = OrganizationStatus::Pending;
            }
            CloudOrganizationEvent::OrganizationalUnitFound { ou }
            | CloudOrganizationEvent::OrganizationalUnitMoved { ou, .. } => {
                self.ous.insert(ou.id.clone(), ou);
            }
            CloudOrganizationEvent::OrganizationalUnitRemoved { id, .. } => {
                self.ous.remove(&id);
            }
            CloudOrganizationEvent::MemberAccountFound { account }
            | CloudOrganizationEvent::MemberAccountMoved { account, .. }
            | CloudOrganizationEvent::MemberAccountStatusChanged { account, .. } => {
                self.accounts.insert(account.id.clone(), account);
            }
            CloudOrganizationEvent::MemberAccountRemoved { id, .. } => {
                self.accounts.remove(&id);
            }
            CloudOrganizationEvent::MemberConnectionFailed { .. } => {}
            CloudOrganizationEvent::DiscoveryCompleted { run_id, status, .. } => {
                self.runs.insert(run_id);
                self.status = status;
            }
        }
    }
}

impl CloudOrganization {
    /// The events that turn the recorded hierarchy into `found`. Nothing is
    /// removed when parts could not be read: absence there means nothing.
    fn changes(&self, run_id: Uuid, found: DiscoveredHierarchy, errors: Vec<String>) -> Vec<CloudOrganizationEvent> {
        use CloudOrganizationEvent as E;
        let mut events = vec![];
        let complete = errors.is_empty();
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
        let status = match (complete, found.accounts.is_empty() && found.ous.is_empty()) {
            (true, _) => OrganizationStatus::Connected,
            (false, false) => OrganizationStatus::Partial,
            (false, true) => OrganizationStatus::Error,
        };
        events.push(E::DiscoveryCompleted {
            run_id,
            ous: found.ous.len() as u64,
            accounts: found.accounts.len() as u64,
            errors,
            status,
        });
        events
    }
}
