//! Detection events: the `detections` table (what the detection is now) and
//! the accounts whose coverage the event can change.

use super::Sides;
use super::batch::Batch;
use super::figures::refresh;
use crate::event::StoredEvent;
use anyhow::Context;
use coverwatch_domain::detection::{DetectionEvent, DetectionScope, DetectionStatus};
use coverwatch_domain::ids::{DetectionId, OrganizationId, TenantId};
use sqlx::PgConnection;
use std::collections::BTreeSet;

pub(super) async fn detection(
    conn: &mut PgConnection,
    batch: &mut Batch,
    event: &StoredEvent,
    decoded: DetectionEvent,
) -> anyhow::Result<()> {
    use DetectionEvent as E;
    let detection_id: DetectionId = event.aggregate_id.parse().context("detection id")?;
    let (tenant_id, scopes) = match decoded {
        E::DetectionRegistered {
            detection_id,
            tenant_id,
            name,
            source,
            techniques,
            scope,
            attack_version,
            derived_from,
        } => {
            let (scope_type, account_id, organization_id, subset) = scope_columns(&scope);
            sqlx::query(
                "INSERT INTO detections (detection_id, tenant_id, name, source, techniques, scope, scope_type,
                        account_id, organization_id, subset, status, attack_version, derived_source_id,
                        mapping_version, registered_at, updated_at, version)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'enabled', $11, $12, $13, $14, $14, $15)
                 ON CONFLICT (detection_id) DO NOTHING",
            )
            .bind(detection_id)
            .bind(tenant_id)
            .bind(name.as_str())
            .bind(source.as_str())
            .bind(sqlx::types::Json(&techniques))
            .bind(sqlx::types::Json(&scope))
            .bind(scope_type)
            .bind(account_id)
            .bind(organization_id)
            .bind(subset)
            .bind(attack_version)
            .bind(derived_from.as_ref().map(|d| d.source_id.clone()))
            .bind(derived_from.as_ref().map(|d| d.mapping_version.clone()))
            .bind(event.recorded_at)
            .bind(event.sequence)
            .execute(&mut *conn)
            .await?;
            (tenant_id, vec![scope])
        }
        other => {
            let row: Option<(TenantId, sqlx::types::Json<DetectionScope>)> =
                sqlx::query_as("SELECT tenant_id, scope FROM detections WHERE detection_id = $1")
                    .bind(detection_id)
                    .fetch_optional(&mut *conn)
                    .await?;
            let Some((tenant_id, sqlx::types::Json(scope))) = row else {
                anyhow::bail!("{} at {} for an unknown detection", event.event_type, event.position);
            };
            let mut scopes = vec![scope];
            match other {
                E::DetectionRegistered { .. } => unreachable!("handled above"),
                E::DetectionUpdated { name, techniques } => {
                    sqlx::query(
                        "UPDATE detections SET name = $2, techniques = $3, updated_at = $4, version = $5
                          WHERE detection_id = $1",
                    )
                    .bind(detection_id)
                    .bind(name.as_str())
                    .bind(sqlx::types::Json(&techniques))
                    .bind(event.recorded_at)
                    .bind(event.sequence)
                    .execute(&mut *conn)
                    .await?;
                }
                E::DetectionScopeChanged { to, .. } => {
                    let (scope_type, account_id, organization_id, subset) = scope_columns(&to);
                    sqlx::query(
                        "UPDATE detections SET scope = $2, scope_type = $3, account_id = $4, organization_id = $5,
                                subset = $6, updated_at = $7, version = $8
                          WHERE detection_id = $1",
                    )
                    .bind(detection_id)
                    .bind(sqlx::types::Json(&to))
                    .bind(scope_type)
                    .bind(account_id)
                    .bind(organization_id)
                    .bind(subset)
                    .bind(event.recorded_at)
                    .bind(event.sequence)
                    .execute(&mut *conn)
                    .await?;
                    scopes.push(to);
                }
                E::DetectionDisabled | E::DetectionEnabled | E::DetectionRetired => {
                    let status = match other {
                        E::DetectionDisabled => DetectionStatus::Disabled,
                        E::DetectionEnabled => DetectionStatus::Enabled,
                        _ => DetectionStatus::Retired,
                    };
                    sqlx::query(
                        "UPDATE detections SET status = $2, updated_at = $3, version = $4 WHERE detection_id = $1",
                    )
                    .bind(detection_id)
                    .bind(status.as_str())
                    .bind(event.recorded_at)
                    .bind(event.sequence)
                    .execute(&mut *conn)
                    .await?;
                }
            }
            (tenant_id, scopes)
        }
    };
    let mut accounts = BTreeSet::new();
    let mut sides = Sides {
        own: false,
        inherited: false,
    };
    for scope in &scopes {
        accounts.extend(batch.accounts_in(conn, tenant_id, scope).await?);
        sides = sides.and(Sides::of(scope));
    }
    refresh(conn, batch, event, tenant_id, accounts.into_iter().collect(), sides).await
}

fn scope_columns(
    scope: &DetectionScope,
) -> (
    &'static str,
    Option<String>,
    Option<OrganizationId>,
    Option<Vec<String>>,
) {
    match scope {
        DetectionScope::Account { account_id } => ("account", Some(account_id.as_str().to_owned()), None, None),
        DetectionScope::Organization {
            organization_id,
            accounts,
        } => (
            "organization",
            None,
            Some(*organization_id),
            accounts
                .as_ref()
                .map(|set| set.iter().map(|a| a.as_str().to_owned()).collect()),
        ),
    }
}
