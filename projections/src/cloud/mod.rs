//! Cloud read models: connected accounts (with their status, so usage counts
//! only connected ones), registered organizations with their hierarchy,
//! members, delegated administrators, SCPs and sources, copied from events.
//! `queries` holds their rows and how they are read.

pub mod queries;

use crate::event::StoredEvent;
use crate::runtime::Subscriber;
use anyhow::Context;
use async_trait::async_trait;
use coverwatch_domain::cloud::hierarchy::path;
use coverwatch_domain::cloud::{AccountSource, CloudAccountsEvent, CloudOrganizationEvent};
use coverwatch_domain::ids::OrganizationId;
use sqlx::PgConnection;

pub struct Cloud;

#[async_trait]
impl Subscriber for Cloud {
    fn name(&self) -> &'static str {
        "cloud"
    }

    fn tables(&self) -> &'static [&'static str] {
        &[
            "cloud_accounts",
            "cloud_organizations",
            "cloud_org_units",
            "cloud_org_members",
            "cloud_org_sources",
        ]
    }

    /// Accounts and organizations answer right after the command.
    fn awaited(&self) -> bool {
        true
    }

    async fn handle(&self, conn: &mut PgConnection, events: &[StoredEvent]) -> anyhow::Result<()> {
        for event in events {
            match event.aggregate_type.as_str() {
                "cloud_accounts" => {
                    let decoded: CloudAccountsEvent = event.decode()?;
                    account(conn, event, decoded).await?;
                }
                "cloud_organization" => {
                    let decoded: CloudOrganizationEvent = event.decode()?;
                    let organization_id: OrganizationId = event.aggregate_id.parse().context("organization id")?;
                    organization(conn, event, organization_id, decoded).await?;
                }
                _ => {}
            }
        }
        Ok(())
    }
}

async fn account(conn: &mut PgConnection, event: &StoredEvent, decoded: CloudAccountsEvent) -> anyhow::Result<()> {
    match decoded {
        CloudAccountsEvent::CloudAccountConnectionFailed {
            tenant_id,
            account,
            reason,
        } => {
            upsert_account(conn, event, tenant_id, &account, "error", Some(&reason)).await?;
        }
        CloudAccountsEvent::AccountScanRegionsSet {
            tenant_id,
            account_id,
            regions,
        } => {
            let regions: Option<Vec<&str>> = regions.as_ref().map(|r| r.iter().map(|r| r.as_str()).collect());
            sqlx::query(
                "UPDATE cloud_accounts SET scan_regions = $3, updated_at = $4 WHERE tenant_id = $1 AND account_id = $2",
            )
            .bind(tenant_id)
            .bind(account_id.as_str())
            .bind(regions)
            .bind(event.recorded_at)
            .execute(&mut *conn)
            .await?;
        }
        CloudAccountsEvent::CloudAccountConnected { tenant_id, account } => {
            upsert_account(conn, event, tenant_id, &account, "connected", None).await?;
            let organization_id = match account.source {
                AccountSource::Standalone => None,
                AccountSource::Organization(id) => Some(id),
            };
            if let Some(organization_id) = organization_id {
                sqlx::query(
                    "UPDATE cloud_org_members SET lifecycle = 'connected', status_reason = NULL
                      WHERE organization_id = $1 AND account_id = $2",
                )
                .bind(organization_id)
                .bind(account.account_id.as_str())
                .execute(&mut *conn)
                .await?;
            }
        }
        CloudAccountsEvent::CloudAccountDisconnected { tenant_id, account_id } => {
            sqlx::query(
                "UPDATE cloud_accounts SET status = 'disconnected', updated_at = $3
                  WHERE tenant_id = $1 AND account_id = $2",
            )
            .bind(tenant_id)
            .bind(account_id.as_str())
            .bind(event.recorded_at)
            .execute(&mut *conn)
            .await?;
            sqlx::query(
                "UPDATE cloud_org_members m SET lifecycle = 'discovered'
                   FROM cloud_organizations o
                  WHERE o.id = m.organization_id AND o.tenant_id = $1 AND m.account_id = $2
                    AND m.lifecycle = 'connected'",
            )
            .bind(tenant_id)
            .bind(account_id.as_str())
            .execute(&mut *conn)
            .await?;
        }
    }
    Ok(())
}

/// A (re)connected or failed account takes its new description (its scan
/// narrowing stays); replays of the same event write the same row.
async fn upsert_account(
    conn: &mut PgConnection,
    event: &StoredEvent,
    tenant_id: coverwatch_domain::ids::TenantId,
    account: &coverwatch_domain::cloud::NewAccount,
    status: &str,
    error: Option<&str>,
) -> anyhow::Result<()> {
    let (source, organization_id) = match account.source {
        AccountSource::Standalone => ("standalone", None),
        AccountSource::Organization(id) => ("organization", Some(id)),
    };
    sqlx::query(
        "INSERT INTO cloud_accounts (tenant_id, account_id, alias, region, role_arn, environment, status,
                source, organization_id, connected_at, updated_at, error)
         VALUES ($1, $2, $3, $4, $5, $6, $10, $7, $8, $9, $9, $11)
         ON CONFLICT (tenant_id, account_id) DO UPDATE SET
            alias = excluded.alias, region = excluded.region, role_arn = excluded.role_arn,
            environment = excluded.environment, status = excluded.status, source = excluded.source,
            organization_id = excluded.organization_id, connected_at = excluded.connected_at,
            updated_at = excluded.updated_at, error = excluded.error",
    )
    .bind(tenant_id)
    .bind(account.account_id.as_str())
    .bind(&account.alias)
    .bind(account.region.as_str())
    .bind(account.role_arn.as_str())
    .bind(account.environment.as_str())
    .bind(source)
    .bind(organization_id)
    .bind(event.recorded_at)
    .bind(status)
    .bind(error)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn organization(
    conn: &mut PgConnection,
    event: &StoredEvent,
    organization_id: OrganizationId,
    decoded: CloudOrganizationEvent,
) -> anyhow::Result<()> {
    use CloudOrganizationEvent as E;
    match decoded {
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
        } => {
            sqlx::query(
                "INSERT INTO cloud_organizations (id, tenant_id, provider, external_org_id, management_account_id,
                        role_arn, external_id, name, member_role_name, status, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'pending', $10) ON CONFLICT (id) DO NOTHING",
            )
            .bind(organization_id)
            .bind(tenant_id)
            .bind(provider.as_str())
            .bind(external_org_id)
            .bind(management_account_id.as_str())
            .bind(role_arn.as_str())
            .bind(external_id)
            .bind(name.as_str())
            .bind(member_role_name)
            .bind(event.recorded_at)
            .execute(&mut *conn)
            .await?;
        }
        E::OrganizationalUnitFound { ou } | E::OrganizationalUnitMoved { ou, .. } => {
            sqlx::query(
                "INSERT INTO cloud_org_units (organization_id, ou_id, name, parent_id, path, path_ids)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (organization_id, ou_id) DO UPDATE SET name = excluded.name,
                    parent_id = excluded.parent_id, path = excluded.path, path_ids = excluded.path_ids",
            )
            .bind(organization_id)
            .bind(&ou.id)
            .bind(&ou.name)
            .bind(&ou.parent_id)
            .bind(path(&ou.path_names))
            .bind(&ou.path_ids)
            .execute(&mut *conn)
            .await?;
        }
        E::OrganizationalUnitRemoved { id, .. } => {
            sqlx::query("DELETE FROM cloud_org_units WHERE organization_id = $1 AND ou_id = $2")
                .bind(organization_id)
                .bind(id)
                .execute(&mut *conn)
                .await?;
        }
        E::MemberAccountFound { account }
        | E::MemberAccountMoved { account, .. }
        | E::MemberAccountStatusChanged { account, .. } => {
            sqlx::query(
                "INSERT INTO cloud_org_members (organization_id, account_id, name, email, aws_status, parent_id,
                        path, path_ids)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                 ON CONFLICT (organization_id, account_id) DO UPDATE SET name = excluded.name,
                    email = excluded.email, aws_status = excluded.aws_status, parent_id = excluded.parent_id,
                    path = excluded.path, path_ids = excluded.path_ids",
            )
            .bind(organization_id)
            .bind(&account.id)
            .bind(&account.name)
            .bind(&account.email)
            .bind(&account.status)
            .bind(&account.parent_id)
            .bind(path(&account.path_names))
            .bind(&account.path_ids)
            .execute(&mut *conn)
            .await?;
        }
        E::MemberAccountRemoved { id, .. } => {
            sqlx::query("DELETE FROM cloud_org_members WHERE organization_id = $1 AND account_id = $2")
                .bind(organization_id)
                .bind(id)
                .execute(&mut *conn)
                .await?;
        }
        E::DelegatedAdministratorsChanged { administrators } => {
            sqlx::query("UPDATE cloud_organizations SET delegated_administrators = $2 WHERE id = $1")
                .bind(organization_id)
                .bind(sqlx::types::Json(administrators))
                .execute(&mut *conn)
                .await?;
        }
        E::ServiceControlPoliciesChanged { policies } => {
            sqlx::query("UPDATE cloud_organizations SET service_control_policies = $2 WHERE id = $1")
                .bind(organization_id)
                .bind(sqlx::types::Json(policies))
                .execute(&mut *conn)
                .await?;
        }
        E::OrganizationSourceFound { source } | E::OrganizationSourceChanged { source } => {
            sqlx::query(
                "INSERT INTO cloud_org_sources (organization_id, source_id, kind, name, account_id, detail)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (organization_id, source_id) DO UPDATE SET kind = excluded.kind,
                    name = excluded.name, account_id = excluded.account_id, detail = excluded.detail",
            )
            .bind(organization_id)
            .bind(&source.id)
            .bind(source.kind().as_str())
            .bind(&source.name)
            .bind(&source.account_id)
            .bind(sqlx::types::Json(&source.detail))
            .execute(&mut *conn)
            .await?;
        }
        E::OrganizationSourceRemoved { id, .. } => {
            sqlx::query("DELETE FROM cloud_org_sources WHERE organization_id = $1 AND source_id = $2")
                .bind(organization_id)
                .bind(id)
                .execute(&mut *conn)
                .await?;
        }
        E::MemberConnectionsRequested { account_ids } => {
            sqlx::query(
                "UPDATE cloud_org_members SET lifecycle = 'connecting', status_reason = NULL
                  WHERE organization_id = $1 AND account_id = ANY($2)",
            )
            .bind(organization_id)
            .bind(account_ids)
            .execute(&mut *conn)
            .await?;
        }
        E::MemberConnected { account_id } => {
            member_lifecycle(conn, organization_id, &account_id, "connected", None).await?;
        }
        E::MemberConnectionFailed { account_id, reason } => {
            member_lifecycle(conn, organization_id, &account_id, "error", Some(&reason)).await?;
        }
        E::MemberDisconnected { account_id } => {
            member_lifecycle(conn, organization_id, &account_id, "discovered", None).await?;
        }
        E::DiscoveryCompleted { status, .. } => {
            sqlx::query("UPDATE cloud_organizations SET discovery_status = $2 WHERE id = $1")
                .bind(organization_id)
                .bind(status.as_str())
                .execute(&mut *conn)
                .await?;
        }
        E::OrganizationStatusChanged { to, .. } => {
            sqlx::query("UPDATE cloud_organizations SET status = $2 WHERE id = $1")
                .bind(organization_id)
                .bind(to.as_str())
                .execute(&mut *conn)
                .await?;
        }
        E::OrganizationScanRegionsSet { regions } => {
            let regions: Option<Vec<&str>> = regions.as_ref().map(|r| r.iter().map(|r| r.as_str()).collect());
            sqlx::query("UPDATE cloud_organizations SET scan_regions = $2 WHERE id = $1")
                .bind(organization_id)
                .bind(regions)
                .execute(&mut *conn)
                .await?;
        }
    }
    Ok(())
}

async fn member_lifecycle(
    conn: &mut PgConnection,
    organization_id: OrganizationId,
    account_id: &str,
    lifecycle: &str,
    reason: Option<&str>,
) -> anyhow::Result<()> {
    sqlx::query(
        "UPDATE cloud_org_members SET lifecycle = $3, status_reason = $4
          WHERE organization_id = $1 AND account_id = $2",
    )
    .bind(organization_id)
    .bind(account_id)
    .bind(lifecycle)
    .bind(reason)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
