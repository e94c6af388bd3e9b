//! One given/when/then test per rule of the CloudAccounts aggregate.

use super::*;
use crate::cloud::CloudServices;
use crate::cloud::values::{AwsAccountId, Environment, Region, RoleArn};
use crate::ids::TenantId;
use crate::plans::Limit;
use cqrs_es::test::TestFramework;

const TENANT: TenantId = TenantId::from_u128(1);

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

fn connect(id: &str, limit: Limit) -> (TenantId, CloudAccountsCommand) {
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
        .then_expect_error(CloudAccountsError::LimitReached { used: 1, limit: 1 });
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
        .then_expect_error(CloudAccountsError::Conflict(
            "account 111111111111 is already connected".into(),
        ));
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
        .then_expect_error(CloudAccountsError::NotFound("cloud account"));
    accounts()
        .given(vec![connected("111111111111")])
        .when(disconnect("111111111111"))
        .then_expect_events(vec![CloudAccountsEvent::CloudAccountDisconnected {
            tenant_id: TENANT,
            account_id: AwsAccountId::parse("111111111111").unwrap(),
        }]);
}
