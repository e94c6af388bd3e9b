//! One given/when/then test per rule of the cloud aggregates.

use super::values::{AwsAccountId, Environment, Provider, Region, RoleArn};
use super::*;
use crate::plans::{Limit, Tier};
use crate::values::Name;
use cqrs_es::test::TestFramework;
use uuid::Uuid;

const TENANT: Uuid = Uuid::from_u128(1);
const ORG: Uuid = Uuid::from_u128(2);

fn account(id: &str) -> NewAccount {
    NewAccount {
        account_id: AwsAccountId::parse(id).unwrap(),
        alias: Some(format!("acct-{id}")),
        region: Region::parse("us-east-1").unwrap(),
        role_arn: RoleArn::parse(&format!("arn:aws:iam::{id}:role/CoverwatchAudit")).unwrap(),
        environment: Environment::Production,
        source: AccountSource::Standalone,
    }
}

fn connected(id: &str) -> CloudAccountsEvent {
    CloudAccountsEvent::CloudAccountConnected {
        tenant_id: TENANT,
        account: account(id),
    }
}

fn connect(id: &str, limit: Limit) -> (Uuid, CloudAccountsCommand) {
    (
        TENANT,
        CloudAccountsCommand::Connect {
            account: account(id),
            max_accounts: limit,
        },
    )
}

fn accounts() -> TestFramework<CloudAccounts> {
    TestFramework::with(CloudServices::default())
}

#[test]
fn an_account_is_connected_within_the_limit() {
    accounts()
        .given(vec![connected("111111111111")])
        .when(connect("222222222222", Limit::AtMost(2)))
        .then_expect_events(vec![connected("222222222222")]);
}

#[test]
fn connecting_beyond_the_limit_is_refused_with_the_numbers() {
    accounts()
        .given(vec![connected("111111111111")])
        .when(connect("222222222222", Limit::AtMost(1)))
        .then_expect_error(CloudError::LimitReached { used: 1, limit: 1 });
}

#[test]
fn disconnected_accounts_do_not_count() {
    accounts()
        .given(vec![
            connected("111111111111"),
            CloudAccountsEvent::CloudAccountDisconnected {
                tenant_id: TENANT,
                account_id: AwsAccountId::parse("111111111111").unwrap(),
            },
        ])
        .when(connect("222222222222", Limit::AtMost(1)))
        .then_expect_events(vec![connected("222222222222")]);
}

#[test]
fn an_account_is_connected_once() {
    accounts()
        .given(vec![connected("111111111111")])
        .when(connect("111111111111", Limit::Unlimited))
        .then_expect_error(CloudError::Conflict("account 111111111111 is already connected".into()));
}

#[test]
fn only_a_connected_account_can_be_disconnected() {
    let disconnect = |id: &str| {
        (
            TENANT,
            CloudAccountsCommand::Disconnect {
                account_id: AwsAccountId::parse(id).unwrap(),
            },
        )
    };
    accounts()
        .given_no_previous_events()
        .when(disconnect("111111111111"))
        .then_expect_error(CloudError::NotFound("cloud account"));
    accounts()
        .given(vec![connected("111111111111")])
        .when(disconnect("111111111111"))
        .then_expect_events(vec![CloudAccountsEvent::CloudAccountDisconnected {
            tenant_id: TENANT,
            account_id: AwsAccountId::parse("111111111111").unwrap(),
        }]);
}

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
        .then_expect_error(CloudError::FeatureNotInPlan {
            feature: "organization features",
            required_tier: Tier::Pro,
        });
}

#[test]
fn the_organization_id_and_the_roles_account_are_checked() {
    organizations()
        .given_no_previous_events()
        .when(register(true, "org-1", "123456789012"))
        .then_expect_error(CloudError::Rule(
            "organization_id must be an AWS organization id such as o-a1b2c3d4e5".into(),
        ));
    organizations()
        .given_no_previous_events()
        .when(register(true, "o-a1b2c3d4e5", "210987654321"))
        .then_expect_error(CloudError::Rule("the role must live in the management account".into()));
}
