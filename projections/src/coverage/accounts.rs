//! Connections and organization membership: an account joins or leaves
//! coverage (and its organization's counts), a member in error stops
//! inheriting source-derived detections, member paths follow discovery.

use super::Sides;
use super::batch::{Account, Batch, Organization};
use super::figures::{org_snapshot, refresh};
use crate::event::StoredEvent;
use coverwatch_domain::attack::TechniqueSet;
use coverwatch_domain::cloud::hierarchy::path;
use coverwatch_domain::cloud::{AccountSource, CloudAccountsEvent, CloudOrganizationEvent};
use coverwatch_domain::ids::{OrganizationId, TenantId};
use sqlx::PgConnection;
use std::collections::HashMap;

pub(super) async fn connection(
    conn: &mut PgConnection,
    batch: &mut Batch,
    event: &StoredEvent,
    decoded: CloudAccountsEvent,
) -> anyhow::Result<()> {
    match decoded {
        CloudAccountsEvent::CloudAccountConnected { tenant_id, account } => {
            let organization_id = match account.source {
                AccountSource::Standalone => None,
                AccountSource::Organization(id) => Some(id),
            };
            let account_id = account.account_id.as_str();
            batch.load(conn, tenant_id, &[account_id.to_owned()]).await?;
            let current = batch.accounts[&(tenant_id, account_id.to_owned())].clone();
            // A reconnect from elsewhere (standalone ↔ organization) first
            // leaves what it was part of.
            if current.as_ref().is_some_and(|a| a.organization_id != organization_id) {
                leave(conn, batch, event, tenant_id, account_id).await?;
            }
            if batch.accounts[&(tenant_id, account_id.to_owned())].is_none() {
                let in_error: Option<bool> = match organization_id {
                    None => None,
                    Some(organization_id) => {
                        sqlx::query_scalar(
                            "SELECT in_error FROM coverage_members WHERE organization_id = $1 AND account_id = $2",
                        )
                        .bind(organization_id)
                        .bind(account_id)
                        .fetch_optional(&mut *conn)
                        .await?
                    }
                };
                let fresh = Account {
                    organization_id,
                    in_error: in_error.unwrap_or(false),
                    own: TechniqueSet::default(),
                    inherited: TechniqueSet::default(),
                    figures: None,
                    position: event.position,
                };
                batch.set_account(tenant_id, account_id, Some(fresh));
                if let Some(organization_id) = organization_id {
                    match batch.organization(conn, organization_id).await? {
                        Some(organization) => organization.accounts += 1,
                        None => {
                            batch.organizations.insert(
                                organization_id,
                                Some(Organization {
                                    tenant_id,
                                    accounts: 1,
                                    counts: HashMap::new(),
                                    figures: None,
                                }),
                            );
                        }
                    }
                }
            }
            refresh(conn, batch, event, tenant_id, vec![account_id.to_owned()], Sides::BOTH).await?;
            // One more account can lower the minimum even if it adds nothing.
            if let Some(organization_id) = organization_id {
                org_snapshot(conn, batch, event, organization_id).await?;
            }
            Ok(())
        }
        CloudAccountsEvent::CloudAccountDisconnected { tenant_id, account_id } => {
            batch.load(conn, tenant_id, &[account_id.as_str().to_owned()]).await?;
            leave(conn, batch, event, tenant_id, account_id.as_str()).await
        }
        // An account in error was never connected: it counts for nothing.
        CloudAccountsEvent::CloudAccountConnectionFailed { .. } | CloudAccountsEvent::AccountScanRegionsSet { .. } => {
            Ok(())
        }
    }
}

/// Removes a connected account: its techniques leave its organization's counts.
async fn leave(
    conn: &mut PgConnection,
    batch: &mut Batch,
    event: &StoredEvent,
    tenant_id: TenantId,
    account_id: &str,
) -> anyhow::Result<()> {
    let Some(Some(account)) = batch.accounts.get(&(tenant_id, account_id.to_owned())).cloned() else {
        return Ok(());
    };
    batch.set_account(tenant_id, account_id, None);
    if let Some(organization_id) = account.organization_id {
        if let Some(organization) = batch.organization(conn, organization_id).await? {
            organization.accounts -= 1;
            for index in account.covered().iter() {
                *organization.counts.entry(index).or_default() -= 1;
            }
        }
        org_snapshot(conn, batch, event, organization_id).await?;
    }
    Ok(())
}

pub(super) async fn member(
    conn: &mut PgConnection,
    batch: &mut Batch,
    event: &StoredEvent,
    organization_id: OrganizationId,
    decoded: CloudOrganizationEvent,
) -> anyhow::Result<()> {
    use CloudOrganizationEvent as E;
    let failed = matches!(&decoded, E::MemberConnectionFailed { .. });
    match decoded {
        // A member whose connection failed: the organization's sources could
        // not be confirmed for it, so their derived detections stop applying
        // until it connects again (or is deselected).
        E::MemberConnectionFailed { account_id, .. }
        | E::MemberConnected { account_id }
        | E::MemberDisconnected { account_id } => {
            let in_error = failed;
            // Load the account as it was before the flag changes.
            if let Some(tenant_id) = event.tenant_id {
                batch.load(conn, tenant_id, std::slice::from_ref(&account_id)).await?;
            }
            sqlx::query("UPDATE coverage_members SET in_error = $3 WHERE organization_id = $1 AND account_id = $2")
                .bind(organization_id)
                .bind(&account_id)
                .bind(in_error)
                .execute(&mut *conn)
                .await?;
            let Some(tenant_id) = event.tenant_id else {
                return Ok(());
            };
            let key = (tenant_id, account_id.clone());
            if let Some(Some(account)) = batch.accounts.get(&key).cloned()
                && account.organization_id == Some(organization_id)
                && account.in_error != in_error
            {
                batch.set_account(tenant_id, &account_id, Some(Account { in_error, ..account }));
                let inherited = Sides {
                    own: false,
                    inherited: true,
                };
                refresh(conn, batch, event, tenant_id, vec![account_id], inherited).await?;
            }
        }
        E::MemberAccountFound { account } | E::MemberAccountMoved { account, .. } => {
            sqlx::query(
                "INSERT INTO coverage_members (organization_id, account_id, path) VALUES ($1, $2, $3)
                 ON CONFLICT (organization_id, account_id) DO UPDATE SET path = excluded.path",
            )
            .bind(organization_id)
            .bind(&account.id)
            .bind(path(&account.path_names))
            .execute(&mut *conn)
            .await?;
        }
        E::MemberAccountRemoved { id, .. } => {
            sqlx::query("DELETE FROM coverage_members WHERE organization_id = $1 AND account_id = $2")
                .bind(organization_id)
                .bind(id)
                .execute(&mut *conn)
                .await?;
        }
        _ => {}
    }
    Ok(())
}
