//! The CloudOrganization aggregate's decisions, one function per command.
//! After every decision the organization's derived status is recomputed and
//! recorded when the events moved it.

use super::commands::CloudOrganizationCommand;
use super::error::CloudOrganizationError;
use super::events::CloudOrganizationEvent;
use super::state::{CloudOrganization, MemberLink};
use crate::cloud::CloudServices;
use crate::cloud::hierarchy::{DiscoveredHierarchy, path};
use crate::cloud::sources::Discovered;
use crate::cloud::values::Provider;
use crate::ids::RunId;
use crate::plans::{Tier, require_org_features};
use cqrs_es::Aggregate;
use cqrs_es::event_sink::EventSink;
use std::collections::BTreeSet;

type Decision = Result<Vec<CloudOrganizationEvent>, CloudOrganizationError>;

impl Aggregate for CloudOrganization {
    const TYPE: &'static str = "cloud_organization";
    type Command = CloudOrganizationCommand;
    type Event = CloudOrganizationEvent;
    type Error = CloudOrganizationError;
    type Services = CloudServices;

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        use CloudOrganizationCommand as C;
        let events = match command {
            command @ C::Register { .. } => self.register(command),
            C::RequestMemberConnections {
                account_ids,
                org_features,
                cheapest_with_org_features,
            } => self.request_member_connections(account_ids, org_features, cheapest_with_org_features),
            C::RecordMemberConnected { account_id } => self.record_member_connected(account_id),
            C::RecordMemberFailure { account_id, reason } => self.record_member_failure(account_id, reason),
            C::RecordMemberDisconnected { account_id } => Ok(self.record_member_disconnected(account_id)),
            C::RecordDiscovery { run_id, found, errors } => self.record_discovery(run_id, found, errors),
            C::SetScanRegions { regions } => self.set_scan_regions(regions),
        }?;
        if events.is_empty() {
            return Ok(());
        }
        let after = crate::emit::emit(self, sink, events).await;
        // The status is derived: record it whenever the events moved it.
        let derived = after.derived_status();
        if derived != after.status {
            let changed = CloudOrganizationEvent::OrganizationStatusChanged {
                from: after.status,
                to: derived,
            };
            crate::emit::emit(&after, sink, [changed]).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        self.fold(event);
    }
}

impl CloudOrganization {
    fn set_scan_regions(
        &self,
        regions: Option<BTreeSet<crate::cloud::values::Region>>,
    ) -> Result<Vec<CloudOrganizationEvent>, CloudOrganizationError> {
        self.registered()?;
        if regions.as_ref().is_some_and(BTreeSet::is_empty) {
            return Err(CloudOrganizationError::Rule(
                "name at least one region, or none to scan every enabled region".into(),
            ));
        }
        if self.scan_regions == regions {
            return Ok(vec![]);
        }
        Ok(vec![CloudOrganizationEvent::OrganizationScanRegionsSet { regions }])
    }

    fn register(&self, command: CloudOrganizationCommand) -> Decision {
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
            unreachable!("only called with Register");
        };
        require_org_features(org_features, cheapest_with_org_features, "organization features")?;
        if self.id.is_some() {
            return Err(CloudOrganizationError::Conflict(
                "the organization is already registered".into(),
            ));
        }
        if provider == Provider::Gcp {
            return Err(CloudOrganizationError::Rule(
                "GCP organizations are not supported yet".into(),
            ));
        }
        if !valid_aws_organization_id(&external_org_id) {
            return Err(CloudOrganizationError::Rule(
                "organization_id must be an AWS organization id such as o-a1b2c3d4e5".into(),
            ));
        }
        let role_name_ok = (1..=64).contains(&member_role_name.len())
            && member_role_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-".contains(&b));
        if !role_name_ok {
            return Err(CloudOrganizationError::Rule(
                "member_role_name must be an IAM role name (1 to 64 of letters, digits and +=,.@_-)".into(),
            ));
        }
        if role_arn.account_id() != management_account_id.as_str() {
            return Err(CloudOrganizationError::Rule(
                "the role must live in the management account".into(),
            ));
        }
        Ok(vec![CloudOrganizationEvent::CloudOrganizationRegistered {
            organization_id,
            tenant_id,
            provider,
            external_org_id,
            management_account_id,
            role_arn,
            external_id,
            name,
            member_role_name,
        }])
    }

    fn request_member_connections(&self, account_ids: Vec<String>, org_features: bool, cheapest: Tier) -> Decision {
        self.registered()?;
        require_org_features(org_features, cheapest, "organization features")?;
        if let Some(unknown) = account_ids.iter().find(|id| !self.accounts.contains_key(*id)) {
            return Err(CloudOrganizationError::Rule(format!(
                "{unknown} is not a discovered member account"
            )));
        }
        if let Some(closed) = account_ids.iter().find(|id| !self.accounts[*id].connectable()) {
            return Err(CloudOrganizationError::Rule(format!(
                "{closed} is {}: it cannot be connected",
                self.accounts[closed].status
            )));
        }
        Ok(vec![CloudOrganizationEvent::MemberConnectionsRequested { account_ids }])
    }

    fn record_member_connected(&self, account_id: String) -> Decision {
        self.member(&account_id)?;
        if self.links.get(&account_id) == Some(&MemberLink::Connected) {
            return Ok(vec![]);
        }
        Ok(vec![CloudOrganizationEvent::MemberConnected { account_id }])
    }

    fn record_member_failure(&self, account_id: String, reason: String) -> Decision {
        self.member(&account_id)?;
        Ok(vec![CloudOrganizationEvent::MemberConnectionFailed {
            account_id,
            reason,
        }])
    }

    fn record_member_disconnected(&self, account_id: String) -> Vec<CloudOrganizationEvent> {
        if !self.links.contains_key(&account_id) {
            return vec![];
        }
        vec![CloudOrganizationEvent::MemberDisconnected { account_id }]
    }

    fn record_discovery(&self, run_id: RunId, found: Discovered, errors: Vec<String>) -> Decision {
        self.registered()?;
        if self.runs.contains(&run_id) {
            return Ok(vec![]);
        }
        Ok(self.changes(run_id, found, errors))
    }

    /// The events that turn the recorded organization into `found`. Nothing
    /// is removed from a part that could not be read: absence there means
    /// nothing.
    fn changes(&self, run_id: RunId, found: Discovered, errors: Vec<String>) -> Vec<CloudOrganizationEvent> {
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

/// An AWS organization id: `o-` and 10 to 32 lowercase letters or digits.
pub fn valid_aws_organization_id(input: &str) -> bool {
    input.strip_prefix("o-").is_some_and(|rest| {
        (10..=32).contains(&rest.len()) && rest.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    })
}
