//! One given/when/then test per rule of the AccountInventory aggregate.

use super::*;
use crate::cloud::values::{AwsAccountId, Region};
use crate::ids::{RunId, TenantId};
use crate::scan::{Observation, Service};
use cqrs_es::test::TestFramework;
use std::collections::BTreeSet;

type Fixture = TestFramework<AccountInventory>;

const TENANT: TenantId = TenantId::from_u128(7);
const RUN: RunId = RunId::from_u128(1);
const RERUN: RunId = RunId::from_u128(2);

fn account() -> AwsAccountId {
    AwsAccountId::parse("111122223333").unwrap()
}

fn region(r: &str) -> Region {
    Region::parse(r).unwrap()
}

fn detector(r: &str, enabled: bool) -> Observation {
    Observation {
        service: Service::Guardduty,
        region: region(r),
        kind: "detector".into(),
        resource_id: format!("det-{r}"),
        enabled,
        detail: Default::default(),
    }
}

fn hub(r: &str) -> Observation {
    Observation {
        service: Service::Securityhub,
        region: region(r),
        kind: "hub".into(),
        resource_id: format!("hub-{r}"),
        enabled: true,
        detail: Default::default(),
    }
}

fn regions(list: &[&str]) -> BTreeSet<Region> {
    list.iter().map(|r| region(r)).collect()
}

fn read_all(list: &[&str]) -> BTreeSet<(Service, Region)> {
    Service::ALL
        .into_iter()
        .flat_map(|s| list.iter().map(move |r| (s, region(r))))
        .collect()
}

fn scan(
    run: RunId,
    scope: &[&str],
    observations: Vec<Observation>,
    read: BTreeSet<(Service, Region)>,
) -> InventoryCommand {
    InventoryCommand::RecordScan {
        tenant_id: TENANT,
        account_id: account(),
        run_id: run,
        regions: regions(scope),
        observations,
        read,
    }
}

fn changed(
    run: RunId,
    scope: &[&str],
    found: Vec<Observation>,
    changed: Vec<Observation>,
    removed: Vec<Observation>,
) -> InventoryEvent {
    InventoryEvent::InventoryChanged {
        tenant_id: TENANT,
        account_id: account(),
        run_id: run,
        regions: regions(scope),
        found,
        changed,
        removed: removed.iter().map(Observation::key).collect(),
    }
}

fn first_scan() -> InventoryEvent {
    changed(
        RUN,
        &["us-east-1", "eu-west-3"],
        vec![detector("us-east-1", true), hub("eu-west-3")],
        vec![],
        vec![],
    )
}

#[test]
fn a_first_scan_records_everything_it_found() {
    Fixture::with(Default::default())
        .given_no_previous_events()
        .when(scan(
            RUN,
            &["us-east-1", "eu-west-3"],
            vec![detector("us-east-1", true), hub("eu-west-3")],
            read_all(&["us-east-1", "eu-west-3"]),
        ))
        .then_expect_events(vec![first_scan()]);
}

#[test]
fn a_rescan_that_finds_nothing_new_appends_nothing() {
    Fixture::with(Default::default())
        .given(vec![first_scan()])
        .when(scan(
            RERUN,
            &["us-east-1", "eu-west-3"],
            vec![hub("eu-west-3"), detector("us-east-1", true)],
            read_all(&["us-east-1", "eu-west-3"]),
        ))
        .then_expect_events(vec![]);
}

#[test]
fn a_rescan_records_what_changed_and_what_is_gone() {
    Fixture::with(Default::default())
        .given(vec![first_scan()])
        .when(scan(
            RERUN,
            &["us-east-1", "eu-west-3"],
            vec![detector("us-east-1", false), detector("eu-west-3", true)],
            read_all(&["us-east-1", "eu-west-3"]),
        ))
        .then_expect_events(vec![changed(
            RERUN,
            &["us-east-1", "eu-west-3"],
            vec![detector("eu-west-3", true)],
            vec![detector("us-east-1", false)],
            vec![hub("eu-west-3")],
        )]);
}

#[test]
fn what_a_scan_could_not_read_keeps_what_was_found_before() {
    // Security Hub in eu-west-3 failed this time: its hub is not "removed".
    let mut read = read_all(&["us-east-1", "eu-west-3"]);
    read.remove(&(Service::Securityhub, region("eu-west-3")));
    Fixture::with(Default::default())
        .given(vec![first_scan()])
        .when(scan(
            RERUN,
            &["us-east-1", "eu-west-3"],
            vec![detector("us-east-1", true)],
            read,
        ))
        .then_expect_events(vec![]);
}

#[test]
fn a_region_taken_out_of_scope_takes_its_findings_with_it() {
    Fixture::with(Default::default())
        .given(vec![first_scan()])
        .when(scan(
            RERUN,
            &["us-east-1"],
            vec![detector("us-east-1", true)],
            read_all(&["us-east-1"]),
        ))
        .then_expect_events(vec![changed(
            RERUN,
            &["us-east-1"],
            vec![],
            vec![],
            vec![hub("eu-west-3")],
        )]);
}

#[test]
fn findings_outside_what_the_scan_read_are_refused() {
    let mut read = read_all(&["us-east-1"]);
    read.remove(&(Service::Guardduty, region("us-east-1")));
    Fixture::with(Default::default())
        .given_no_previous_events()
        .when(scan(RUN, &["us-east-1"], vec![detector("us-east-1", true)], read))
        .then_expect_error(InventoryError::Rule(
            "guardduty in us-east-1 was not read in this scan's scope".into(),
        ));
}

#[test]
fn an_inventory_belongs_to_one_account() {
    Fixture::with(Default::default())
        .given(vec![first_scan()])
        .when(InventoryCommand::RecordScan {
            tenant_id: TenantId::from_u128(8),
            account_id: account(),
            run_id: RERUN,
            regions: regions(&["us-east-1"]),
            observations: vec![],
            read: BTreeSet::new(),
        })
        .then_expect_error(InventoryError::OtherAccount);
}
