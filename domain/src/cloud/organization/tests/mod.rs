//! One given/when/then test per rule of the CloudOrganization aggregate.

mod discovery;

use super::*;
use crate::cloud::CloudServices;
use crate::cloud::values::{AwsAccountId, Provider, RoleArn};
use crate::ids::{OrganizationId, TenantId};
use crate::plans::Tier;
use crate::values::Name;
use cqrs_es::test::TestFramework;

const TENANT: TenantId = TenantId::from_u128(1);
const ORG: OrganizationId = OrganizationId::from_u128(2);

fn register(org_features: bool, external_org_id: &str, role_account: &str) -> CloudOrganizationCommand {
    CloudOrganizationCommand::Register {
        organization_id: ORG,
        tenant_id: TENANT,
        provider: Provider::Aws,
        external_org_id: external_org_id.into(),
        management_account_id: AwsAccountId::parse("123456789012").unwrap(),
        role_arn: RoleArn::parse(&format!("arn:aws:iam::{role_account}:role/CoverwatchAudit")).unwrap(),
        external_id: "cw-tenant-1".into(),
        name: Name::parse("Acme AWS").unwrap(),
        member_role_name: "CoverwatchAudit".into(),
        org_features,
        cheapest_with_org_features: Tier::Pro,
    }
}

fn registered() -> CloudOrganizationEvent {
    CloudOrganizationEvent::CloudOrganizationRegistered {
        organization_id: ORG,
        tenant_id: TENANT,
        provider: Provider::Aws,
        external_org_id: "o-a1b2c3d4e5".into(),
        management_account_id: AwsAccountId::parse("123456789012").unwrap(),
        role_arn: RoleArn::parse("arn:aws:iam::123456789012:role/CoverwatchAudit").unwrap(),
        external_id: "cw-tenant-1".into(),
        name: Name::parse("Acme AWS").unwrap(),
        member_role_name: "CoverwatchAudit".into(),
    }
}

fn organizations() -> TestFramework<CloudOrganization> {
    TestFramework::with(CloudServices::default())
}

#[test]
fn an_organization_is_registered_with_organization_features() {
    organizations()
        .given_no_previous_events()
        .when(register(true, "o-a1b2c3d4e5", "123456789012"))
        .then_expect_events(vec![registered()]);
}

#[test]
fn an_organization_needs_organization_features() {
    organizations()
        .given_no_previous_events()
        .when(register(false, "o-a1b2c3d4e5", "123456789012"))
        .then_expect_error(CloudOrganizationError::FeatureNotInPlan {
            feature: "organization features",
            required_tier: Tier::Pro,
        });
}

#[test]
fn the_organization_id_and_the_roles_account_are_checked() {
    organizations()
        .given_no_previous_events()
        .when(register(true, "org-1", "123456789012"))
        .then_expect_error(CloudOrganizationError::Rule(
            "organization_id must be an AWS organization id such as o-a1b2c3d4e5".into(),
        ));
    organizations()
        .given_no_previous_events()
        .when(register(true, "o-a1b2c3d4e5", "210987654321"))
        .then_expect_error(CloudOrganizationError::Rule(
            "the role must live in the management account".into(),
        ));
}
