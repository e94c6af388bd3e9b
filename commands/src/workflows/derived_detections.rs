//! Derived detections: a process manager over the log. When discovery
//! records an organization-level source (an organization CloudTrail trail, a
//! Config aggregator, Security Hub or GuardDuty administration), it registers
//! an organization-scoped detection for it with the CTID mapping's detect
//! techniques; a changed source updates it (a trail that stopped logging
//! disables it), a removed one retires it; a source found again after that
//! gets a new detection. The detection of a source is found in the log
//! itself, and a new one's id is derived from the organization, the source
//! and the position of the event that found it, so a replayed event changes
//! nothing.

use crate::error::CommandError;
use crate::executor::{DetectionCommands, RETRIES};
use crate::log::derived_detection_of_source;
use crate::metadata::CommandMetadata;
use crate::services::BillingService;
use coverwatch_domain::attack::{self, ctid_mappings};
use coverwatch_domain::cloud::CloudOrganizationEvent;
use coverwatch_domain::cloud::sources::{OrganizationSource, SourceDetail, SourceKind};
use coverwatch_domain::detection::{
    DerivedFrom, DetectionCommand, DetectionError, DetectionScope, DetectionSource, DetectionStatus, Techniques,
};
use coverwatch_domain::ids::{DetectionId, OrganizationId, TenantId};
use coverwatch_domain::plans::PlanCatalog;
use coverwatch_domain::values::Name;
use coverwatch_projections::{StoredEvent, Subscriber};
use sha2::{Digest, Sha256};
use sqlx::PgConnection;
use std::sync::Arc;

pub struct DerivedDetections {
    pub detections: Arc<DetectionCommands>,
    pub billing: Arc<BillingService>,
    pub catalog: Arc<PlanCatalog>,
}

/// The detection Coverwatch registers for a source of an organization, found
/// by the event at `position`.
pub fn derived_id(organization_id: OrganizationId, source_id: &str, position: i64) -> DetectionId {
    let digest = Sha256::digest(format!("derived-detection:{organization_id}:{source_id}:{position}"));
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid().into()
}

/// The detection source and CTID control a kind of organization source is.
fn control(kind: SourceKind) -> (DetectionSource, &'static str) {
    match kind {
        // CTID marks CloudTrail not mappable: a log source, mapped to nothing.
        SourceKind::CloudtrailOrganizationTrail => (DetectionSource::LogSink, "aws_cloudtrail"),
        SourceKind::ConfigAggregator => (DetectionSource::ConfigRule, "aws_config"),
        SourceKind::SecurityHub => (DetectionSource::SecurityhubControl, "aws_security_hub"),
        SourceKind::Guardduty => (DetectionSource::Guardduty, "amazon_guardduty"),
    }
}

fn techniques(kind: SourceKind) -> Techniques {
    let (_, control) = control(kind);
    ctid_mappings()
        .detect("aws", control, attack::latest())
        .into_iter()
        .map(|m| (m.technique, m.confidence))
        .collect()
}

/// Whether the source currently feeds detections (a trail must be logging).
fn active(source: &OrganizationSource) -> bool {
    !matches!(
        source.detail,
        SourceDetail::CloudtrailOrganizationTrail {
            logging: Some(false),
            ..
        }
    )
}

impl DerivedDetections {
    /// The newest detection registered for the source, from the log.
    async fn current(
        &self,
        conn: &mut PgConnection,
        organization_id: OrganizationId,
        source_id: &str,
    ) -> anyhow::Result<Option<DetectionId>> {
        Ok(derived_detection_of_source(conn, organization_id, source_id).await?)
    }

    async fn run(&self, id: DetectionId, command: DetectionCommand, tenant_id: TenantId) -> anyhow::Result<()> {
        let metadata = CommandMetadata::system(tenant_id);
        match self.detections.execute_retrying(id, command, &metadata, RETRIES).await {
            Ok(_) => Ok(()),
            // Already done (a replay), or no longer possible: nothing to do.
            Err(CommandError::Detection(
                DetectionError::AlreadyRegistered | DetectionError::Retired | DetectionError::NotFound,
            )) => Ok(()),
            Err(CommandError::Detection(refused)) => {
                tracing::warn!(%id, %tenant_id, error = %refused, "a derived detection was refused");
                Ok(())
            }
            Err(other) => Err(anyhow::anyhow!(other).context("a derived detection command")),
        }
    }

    async fn found(
        &self,
        conn: &mut PgConnection,
        event: &StoredEvent,
        tenant_id: TenantId,
        organization_id: OrganizationId,
        source: OrganizationSource,
    ) -> anyhow::Result<()> {
        let kind = source.kind();
        let name = Name::parse(
            &format!("{} ({})", source.name, source.id)
                .chars()
                .take(100)
                .collect::<String>(),
        )
        .or_else(|_| Name::parse(kind.as_str()))
        .map_err(|e| anyhow::anyhow!("a derived detection's name: {e}"))?;
        let techniques = techniques(kind);
        let current = match self.current(conn, organization_id, &source.id).await? {
            Some(id) if self.detections.load(id).await?.status != DetectionStatus::Retired => Some(id),
            _ => None,
        };
        let id = match current {
            // Re-discovered: keep it in line with the source and the mapping.
            Some(id) => {
                if !techniques.is_empty() {
                    let update = DetectionCommand::Update {
                        name: Some(name),
                        techniques: Some(techniques),
                        scope: None,
                    };
                    self.run(id, update, tenant_id).await?;
                }
                id
            }
            None => {
                let id = derived_id(organization_id, &source.id, event.position);
                let register = DetectionCommand::Register {
                    detection_id: id,
                    tenant_id,
                    name,
                    source: control(kind).0,
                    techniques,
                    scope: DetectionScope::Organization {
                        organization_id,
                        accounts: None,
                    },
                    attack_version: attack::latest().attack_version.clone(),
                    derived_from: Some(DerivedFrom {
                        organization_id,
                        source_id: source.id.clone(),
                        mapping_version: ctid_mappings().version("aws"),
                    }),
                    org_features: self.billing.entitlements(tenant_id).await?.org_features,
                    cheapest_with_org_features: self.catalog.cheapest_with_org_features(),
                };
                self.run(id, register, tenant_id).await?;
                id
            }
        };
        let toggle = if active(&source) {
            DetectionCommand::Enable
        } else {
            DetectionCommand::Disable
        };
        self.run(id, toggle, tenant_id).await
    }
}

#[async_trait::async_trait]
impl Subscriber for DerivedDetections {
    fn name(&self) -> &'static str {
        "derived_detections"
    }

    fn tables(&self) -> &'static [&'static str] {
        &[]
    }

    /// It issues commands: a rebuild must not run it again.
    fn rebuildable(&self) -> bool {
        false
    }

    /// Commands wait for it: a discovery's response (and the coverage read
    /// right after it) shows the detections its sources derive.
    fn awaited(&self) -> bool {
        true
    }

    async fn handle(&self, conn: &mut PgConnection, events: &[StoredEvent]) -> anyhow::Result<()> {
        use CloudOrganizationEvent as E;
        for event in events.iter().filter(|e| e.aggregate_type == "cloud_organization") {
            let (Some(tenant_id), Ok(organization_id)) =
                (event.tenant_id, event.aggregate_id.parse::<OrganizationId>())
            else {
                continue;
            };
            let decoded: CloudOrganizationEvent = event.decode()?;
            match decoded {
                E::OrganizationSourceFound { source } | E::OrganizationSourceChanged { source } => {
                    self.found(conn, event, tenant_id, organization_id, source).await?;
                }
                E::OrganizationSourceRemoved { id, .. } => {
                    if let Some(detection) = self.current(conn, organization_id, &id).await? {
                        self.run(detection, DetectionCommand::Retire, tenant_id).await?;
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }
}
