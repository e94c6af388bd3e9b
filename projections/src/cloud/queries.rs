//! The cloud read models' rows and how they are read: a tenant's accounts,
//! its organizations with their counts, members (a page at a time by path),
//! hierarchy and sources. Every organization query that takes a tenant
//! answers only for that tenant's organizations.

use chrono::{DateTime, Utc};
use coverwatch_domain::ids::{OrganizationId, TenantId};
use serde_json::Value;
use sqlx::PgPool;

/// A connected (or disconnected) cloud account of a tenant.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CloudAccountRow {
    pub account_id: String,
    pub alias: Option<String>,
    pub region: String,
    pub role_arn: String,
    pub environment: String,
    pub status: String,
    pub source: String,
    pub organization_id: Option<OrganizationId>,
    pub connected_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Why it is in error (AWS's answer to AssumeRole).
    pub error: Option<String>,
    /// Where scans look (None: every enabled region, or its organization's).
    pub scan_regions: Option<Vec<String>>,
}

const ACCOUNT_COLUMNS: &str = "account_id, alias, region, role_arn, environment, status, source, organization_id, \
     connected_at, updated_at, error, scan_regions";

/// A registered organization, with what its last discovery recorded.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OrganizationRow {
    pub id: OrganizationId,
    pub tenant_id: TenantId,
    pub provider: String,
    pub external_org_id: String,
    pub management_account_id: String,
    pub role_arn: String,
    pub external_id: String,
    pub name: String,
    pub member_role_name: String,
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub discovery_status: Option<String>,
    pub delegated_administrators: Value,
    pub service_control_policies: Value,
    /// Where scans of its members look (None: every enabled region).
    pub scan_regions: Option<Vec<String>>,
}

const ORGANIZATION_COLUMNS: &str = "id, tenant_id, provider, external_org_id, management_account_id, role_arn, \
    external_id, name, member_role_name, status, created_at, discovery_status, delegated_administrators, \
    service_control_policies, scan_regions";

/// A member account as discovery found it, with the tenant's selection.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MemberRow {
    pub account_id: String,
    pub name: String,
    pub email: String,
    pub aws_status: String,
    pub parent_id: String,
    pub path: String,
    pub path_ids: Vec<String>,
    pub lifecycle: String,
    pub status_reason: Option<String>,
}

const MEMBER_COLUMNS: &str = "account_id, name, email, aws_status, parent_id, path, path_ids, lifecycle, status_reason";

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UnitRow {
    pub ou_id: String,
    pub name: String,
    pub parent_id: String,
    pub path: String,
    pub path_ids: Vec<String>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SourceRow {
    pub source_id: String,
    pub kind: String,
    pub name: String,
    pub account_id: String,
    pub detail: Value,
}

/// Counts shown with an organization.
#[derive(Debug, Clone, Copy, sqlx::FromRow)]
pub struct OrganizationCounts {
    pub units: i64,
    pub members: i64,
    pub connected: i64,
    pub failed: i64,
}

pub async fn account(pool: &PgPool, tenant_id: TenantId, account_id: &str) -> sqlx::Result<Option<CloudAccountRow>> {
    sqlx::query_as(&format!(
        "SELECT {ACCOUNT_COLUMNS} FROM cloud_accounts WHERE tenant_id = $1 AND account_id = $2"
    ))
    .bind(tenant_id)
    .bind(account_id)
    .fetch_optional(pool)
    .await
}

/// The tenant's accounts by account id, filtered by environment and status.
pub async fn accounts_page(
    pool: &PgPool,
    tenant_id: TenantId,
    environment: Option<&str>,
    status: Option<&str>,
    after: Option<&str>,
    limit: i64,
) -> sqlx::Result<Vec<CloudAccountRow>> {
    sqlx::query_as(&format!(
        "SELECT {ACCOUNT_COLUMNS} FROM cloud_accounts
          WHERE tenant_id = $1 AND ($2::text IS NULL OR environment = $2) AND ($3::text IS NULL OR status = $3)
            AND ($4::text IS NULL OR account_id > $4)
          ORDER BY account_id LIMIT $5"
    ))
    .bind(tenant_id)
    .bind(environment)
    .bind(status)
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Whether the account is connected in the tenant now.
pub async fn is_connected(pool: &PgPool, tenant_id: TenantId, account_id: &str) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM cloud_accounts WHERE tenant_id = $1 AND account_id = $2 AND status = 'connected')",
    )
    .bind(tenant_id)
    .bind(account_id)
    .fetch_one(pool)
    .await
}

/// Whether the tenant ever connected the account (connected or not now).
pub async fn is_known(pool: &PgPool, tenant_id: TenantId, account_id: &str) -> sqlx::Result<bool> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM cloud_accounts WHERE tenant_id = $1 AND account_id = $2)")
        .bind(tenant_id)
        .bind(account_id)
        .fetch_one(pool)
        .await
}

/// Connected accounts: what counts against the plan.
pub async fn connected_accounts(pool: &PgPool, tenant_id: TenantId) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT count(*) FROM cloud_accounts WHERE tenant_id = $1 AND status = 'connected'")
        .bind(tenant_id)
        .fetch_one(pool)
        .await
}

/// The tenant's organization (`None` for another tenant's).
pub async fn organization(
    pool: &PgPool,
    tenant_id: TenantId,
    organization_id: OrganizationId,
) -> sqlx::Result<Option<OrganizationRow>> {
    sqlx::query_as(&format!(
        "SELECT {ORGANIZATION_COLUMNS} FROM cloud_organizations WHERE id = $1 AND tenant_id = $2"
    ))
    .bind(organization_id)
    .bind(tenant_id)
    .fetch_optional(pool)
    .await
}

/// The tenant's organizations, oldest first (ids are time-ordered).
pub async fn organizations_page(
    pool: &PgPool,
    tenant_id: TenantId,
    after: Option<OrganizationId>,
    limit: i64,
) -> sqlx::Result<Vec<OrganizationRow>> {
    sqlx::query_as(&format!(
        "SELECT {ORGANIZATION_COLUMNS} FROM cloud_organizations
          WHERE tenant_id = $1 AND ($2::uuid IS NULL OR id > $2) ORDER BY id LIMIT $3"
    ))
    .bind(tenant_id)
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await
}

pub async fn organization_counts(pool: &PgPool, organization_id: OrganizationId) -> sqlx::Result<OrganizationCounts> {
    sqlx::query_as(
        "SELECT (SELECT count(*) FROM cloud_org_units WHERE organization_id = $1) AS units,
                count(*) AS members, count(*) FILTER (WHERE lifecycle = 'connected') AS connected,
                count(*) FILTER (WHERE lifecycle = 'error') AS failed
           FROM cloud_org_members WHERE organization_id = $1",
    )
    .bind(organization_id)
    .fetch_one(pool)
    .await
}

/// What a page of members is filtered by (each `None` is no filter).
#[derive(Debug, Clone, Default)]
pub struct MemberFilter {
    /// `Root/Production` selects that subtree.
    pub path_prefix: Option<String>,
    pub lifecycle: Option<String>,
    pub aws_status: Option<String>,
}

/// Members by (path, account id), after that pair.
pub async fn members_page(
    pool: &PgPool,
    organization_id: OrganizationId,
    filter: &MemberFilter,
    after: Option<(String, String)>,
    limit: i64,
) -> sqlx::Result<Vec<MemberRow>> {
    let (after_path, after_account) = after.unzip();
    sqlx::query_as(&format!(
        "SELECT {MEMBER_COLUMNS}
           FROM cloud_org_members
          WHERE organization_id = $1
            AND ($2::text IS NULL OR path = $2 OR starts_with(path, $2 || '/'))
            AND ($3::text IS NULL OR lifecycle = $3)
            AND ($4::text IS NULL OR aws_status = $4)
            AND ($5::text IS NULL OR (path, account_id) > ($5, $6))
          ORDER BY path, account_id
          LIMIT $7"
    ))
    .bind(organization_id)
    .bind(&filter.path_prefix)
    .bind(&filter.lifecycle)
    .bind(&filter.aws_status)
    .bind(after_path)
    .bind(after_account)
    .bind(limit)
    .fetch_all(pool)
    .await
}

pub async fn member(
    pool: &PgPool,
    organization_id: OrganizationId,
    account_id: &str,
) -> sqlx::Result<Option<MemberRow>> {
    sqlx::query_as(&format!(
        "SELECT {MEMBER_COLUMNS} FROM cloud_org_members WHERE organization_id = $1 AND account_id = $2"
    ))
    .bind(organization_id)
    .bind(account_id)
    .fetch_optional(pool)
    .await
}

/// Which members a connection request selects: the listed accounts (any
/// AWS status, so inactive ones can be refused by name), or the active
/// members of the organization or of a subtree. (account id, AWS status).
pub async fn members_to_connect(
    pool: &PgPool,
    organization_id: OrganizationId,
    account_ids: Option<&[String]>,
    path_prefix: Option<&str>,
) -> sqlx::Result<Vec<(String, String)>> {
    sqlx::query_as(
        "SELECT account_id, aws_status FROM cloud_org_members
          WHERE organization_id = $1
            AND ($2::text[] IS NULL OR account_id = ANY($2))
            AND ($3::text IS NULL OR path = $3 OR starts_with(path, $3 || '/'))
            AND ($4 OR aws_status = 'ACTIVE')
          ORDER BY account_id",
    )
    .bind(organization_id)
    .bind(account_ids)
    .bind(path_prefix)
    .bind(account_ids.is_some())
    .fetch_all(pool)
    .await
}

/// How many of `account_ids` are members of the organization.
pub async fn count_members(pool: &PgPool, organization_id: OrganizationId, account_ids: &[&str]) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT count(*) FROM cloud_org_members WHERE organization_id = $1 AND account_id = ANY($2)")
        .bind(organization_id)
        .bind(account_ids)
        .fetch_one(pool)
        .await
}

/// The organization's OUs by path.
pub async fn units(pool: &PgPool, organization_id: OrganizationId) -> sqlx::Result<Vec<UnitRow>> {
    sqlx::query_as(
        "SELECT ou_id, name, parent_id, path, path_ids FROM cloud_org_units WHERE organization_id = $1 ORDER BY path",
    )
    .bind(organization_id)
    .fetch_all(pool)
    .await
}

/// Every member with its parent (OU or root), by account id.
pub async fn member_parents(pool: &PgPool, organization_id: OrganizationId) -> sqlx::Result<Vec<(String, String)>> {
    sqlx::query_as("SELECT account_id, parent_id FROM cloud_org_members WHERE organization_id = $1 ORDER BY account_id")
        .bind(organization_id)
        .fetch_all(pool)
        .await
}

/// The organization-level detection sources, by kind and id.
pub async fn sources(pool: &PgPool, organization_id: OrganizationId) -> sqlx::Result<Vec<SourceRow>> {
    sqlx::query_as(
        "SELECT source_id, kind, name, account_id, detail FROM cloud_org_sources
          WHERE organization_id = $1 ORDER BY kind, source_id",
    )
    .bind(organization_id)
    .fetch_all(pool)
    .await
}

/// Every connected account of every tenant, with when it connected (for
/// the scan schedule).
pub async fn all_connected(pool: &PgPool) -> sqlx::Result<Vec<(TenantId, String, DateTime<Utc>)>> {
    sqlx::query_as("SELECT tenant_id, account_id, connected_at FROM cloud_accounts WHERE status = 'connected'")
        .fetch_all(pool)
        .await
}

/// Every registered organization of every tenant, with when it was
/// registered (for the re-discovery schedule).
pub async fn all_organizations(pool: &PgPool) -> sqlx::Result<Vec<(TenantId, OrganizationId, DateTime<Utc>)>> {
    sqlx::query_as("SELECT tenant_id, id, created_at FROM cloud_organizations")
        .fetch_all(pool)
        .await
}
