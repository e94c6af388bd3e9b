//! The CloudOrganization aggregate: a tenant's AWS (or GCP) organization,
//! registered with the role Coverwatch assumes. Registering needs the plan's
//! organization features. Discovery of its hierarchy is later work.

use super::CloudServices;
use super::error::CloudError;
use super::values::{AwsAccountId, Provider, RoleArn};
use crate::plans::Tier;
use crate::values::Name;
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
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
}

impl DomainEvent for CloudOrganizationEvent {
    fn event_type(&self) -> String {
        match self {
            Self::CloudOrganizationRegistered { .. } => "CloudOrganizationRegistered".to_owned(),
        }
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
        } = command;
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
        }
    }
}
