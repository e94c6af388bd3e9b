//! The Detection aggregate's application service: registration and scope
//! changes with the plan's organization features (decided in the
//! aggregate), changes at the client's `If-Match` version, transitions.

use crate::error::CommandError;
use crate::executor::{Committed, DetectionCommands};
use crate::idempotency::fresh_id;
use crate::metadata::CommandMetadata;
use crate::services::billing::BillingService;
use coverwatch_domain::attack;
use coverwatch_domain::detection::{DetectionCommand, DetectionScope, DetectionSource, ScopeChange, Techniques};
use coverwatch_domain::ids::{DetectionId, TenantId};
use coverwatch_domain::plans::PlanCatalog;
use coverwatch_domain::values::Name;
use std::sync::Arc;

pub struct DetectionService {
    pub commands: Arc<DetectionCommands>,
    pub billing: Arc<BillingService>,
    pub catalog: Arc<PlanCatalog>,
}

/// A detection to register, as the tenant described it.
#[derive(Debug, Clone)]
pub struct NewDetection {
    pub name: Name,
    pub source: DetectionSource,
    pub techniques: Techniques,
    pub scope: DetectionScope,
}

/// A change of a detection: each `None` keeps that part.
#[derive(Debug, Clone, Default)]
pub struct DetectionChange {
    pub name: Option<Name>,
    pub techniques: Option<Techniques>,
    pub scope: Option<DetectionScope>,
}

impl DetectionService {
    /// Registers it against the newest ATT&CK catalog.
    pub async fn register(
        &self,
        tenant_id: TenantId,
        detection: NewDetection,
        metadata: &CommandMetadata,
    ) -> Result<(DetectionId, Committed), CommandError> {
        let detection_id: DetectionId = fresh_id("detection");
        let command = DetectionCommand::Register {
            detection_id,
            tenant_id,
            name: detection.name,
            source: detection.source,
            techniques: detection.techniques,
            scope: detection.scope,
            attack_version: attack::latest().attack_version.clone(),
            derived_from: None,
            org_features: self.billing.entitlements(tenant_id).await?.org_features,
            cheapest_with_org_features: self.catalog.cheapest_with_org_features(),
        };
        let committed = self.commands.execute(detection_id, command, metadata).await?;
        Ok((detection_id, committed))
    }

    /// Changes name, techniques and scope whole or not at all.
    pub async fn change(
        &self,
        tenant_id: TenantId,
        detection_id: DetectionId,
        change: DetectionChange,
        expected_version: Option<u64>,
        metadata: &CommandMetadata,
    ) -> Result<Committed, CommandError> {
        let scope = match change.scope {
            Some(scope) => Some(ScopeChange {
                scope,
                org_features: self.billing.entitlements(tenant_id).await?.org_features,
                cheapest_with_org_features: self.catalog.cheapest_with_org_features(),
            }),
            None => None,
        };
        let command = DetectionCommand::Update {
            name: change.name,
            techniques: change.techniques,
            scope,
        };
        self.execute(detection_id, command, expected_version, metadata).await
    }

    /// Runs a command, only at the client's `If-Match` version when it sent one.
    pub async fn execute(
        &self,
        detection_id: DetectionId,
        command: DetectionCommand,
        expected_version: Option<u64>,
        metadata: &CommandMetadata,
    ) -> Result<Committed, CommandError> {
        let command = match expected_version {
            Some(version) => DetectionCommand::AtVersion {
                version,
                command: Box::new(command),
            },
            None => command,
        };
        self.commands.execute(detection_id, command, metadata).await
    }
}
