//! The AccountInventory aggregate's decisions.

use super::commands::InventoryCommand;
use super::error::InventoryError;
use super::events::InventoryEvent;
use super::state::AccountInventory;
use crate::cloud::values::{AwsAccountId, Region};
use crate::ids::{RunId, TenantId};
use crate::scan::{Observation, ObservationKey, Service};
use cqrs_es::Aggregate;
use cqrs_es::event_sink::EventSink;
use std::collections::{BTreeMap, BTreeSet};

impl Aggregate for AccountInventory {
    const TYPE: &'static str = "account_inventory";
    type Command = InventoryCommand;
    type Event = InventoryEvent;
    type Error = InventoryError;
    type Services = super::InventoryServices;

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let events = match command {
            InventoryCommand::RecordScan {
                tenant_id,
                account_id,
                run_id,
                regions,
                observations,
                read,
            } => self.record_scan(tenant_id, account_id, run_id, regions, observations, read)?,
        };
        crate::emit::emit(self, sink, events).await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        self.fold(event);
    }
}

impl AccountInventory {
    /// The difference against what the inventory holds: in every (service,
    /// region) the scan read, what is new, changed or gone; in a region no
    /// longer in scope, everything is gone; elsewhere nothing moves.
    fn record_scan(
        &self,
        tenant_id: TenantId,
        account_id: AwsAccountId,
        run_id: RunId,
        regions: BTreeSet<Region>,
        observations: Vec<Observation>,
        read: BTreeSet<(Service, Region)>,
    ) -> Result<Vec<InventoryEvent>, InventoryError> {
        if self.tenant_id.is_some_and(|t| t != tenant_id) || self.account_id.as_ref().is_some_and(|a| *a != account_id)
        {
            return Err(InventoryError::OtherAccount);
        }
        if let Some(stray) = observations
            .iter()
            .find(|o| !read.contains(&(o.service, o.region.clone())) || !regions.contains(&o.region))
        {
            return Err(InventoryError::Rule(format!(
                "{} in {} was not read in this scan's scope",
                stray.service, stray.region
            )));
        }
        let now: BTreeMap<ObservationKey, Observation> = observations.into_iter().map(|o| (o.key(), o)).collect();
        let mut found = vec![];
        let mut changed = vec![];
        for (key, observation) in &now {
            match self.observations.get(key) {
                None => found.push(observation.clone()),
                Some(before) if before != observation => changed.push(observation.clone()),
                Some(_) => {}
            }
        }
        let removed: Vec<ObservationKey> = self
            .observations
            .keys()
            .filter(|key| {
                let out_of_scope = !regions.contains(&key.region);
                let read_again = read.contains(&(key.service, key.region.clone()));
                out_of_scope || (read_again && !now.contains_key(*key))
            })
            .cloned()
            .collect();
        let first = self.tenant_id.is_none();
        if found.is_empty() && changed.is_empty() && removed.is_empty() && regions == self.regions && !first {
            return Ok(vec![]);
        }
        Ok(vec![InventoryEvent::InventoryChanged {
            tenant_id,
            account_id,
            run_id,
            regions,
            found,
            changed,
            removed,
        }])
    }
}
