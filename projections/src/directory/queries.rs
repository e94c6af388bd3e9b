//! How the directory is read: tenants, members, invitations and API keys a
//! page at a time (ordered by their time-ordered ids), and the one join
//! authentication makes. Pages fetch `limit` rows: callers ask one more than
//! they show to know whether another page follows.

use super::rows::{ApiKeyRow, InvitationRow, MemberRow, TenantRow};
use coverwatch_domain::ids::{ApiKeyId, InvitationId, MemberId, TenantId};
use sqlx::PgPool;

const TENANT_COLUMNS: &str = "id, slug, name, industry, company_size, contact_email, billing_email, \
    owner_member_id, parent_id, hierarchy_path, status, suspended_reason, version, created_at, updated_at, deleted_at";
const MEMBER_COLUMNS: &str = "id, tenant_id, email, role, status, joined_at, updated_at";
const INVITATION_COLUMNS: &str = "id, tenant_id, email, role, status, invited_by, expires_at, created_at, updated_at";
const API_KEY_COLUMNS: &str = "id, tenant_id, member_id, name, prefix, secret_hash, created_at, revoked_at";

/// A tenant that has not been deleted.
pub async fn tenant(pool: &PgPool, tenant_id: TenantId) -> sqlx::Result<Option<TenantRow>> {
    sqlx::query_as(&format!(
        "SELECT {TENANT_COLUMNS} FROM tenants WHERE id = $1 AND status <> 'deleted'"
    ))
    .bind(tenant_id)
    .fetch_optional(pool)
    .await
}

/// Every tenant (platform admin), by id, optionally of one status.
pub async fn tenants_page(
    pool: &PgPool,
    status: Option<&str>,
    after: Option<TenantId>,
    limit: i64,
) -> sqlx::Result<Vec<TenantRow>> {
    sqlx::query_as(&format!(
        "SELECT {TENANT_COLUMNS} FROM tenants
          WHERE ($1::text IS NULL OR status = $1) AND ($2::uuid IS NULL OR id > $2)
          ORDER BY id LIMIT $3"
    ))
    .bind(status)
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// The tenant's version (its ETag), unless deleted.
pub async fn tenant_version(pool: &PgPool, tenant_id: TenantId) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar("SELECT version FROM tenants WHERE id = $1 AND status <> 'deleted'")
        .bind(tenant_id)
        .fetch_optional(pool)
        .await
}

pub async fn member(pool: &PgPool, tenant_id: TenantId, member_id: MemberId) -> sqlx::Result<Option<MemberRow>> {
    sqlx::query_as(&format!(
        "SELECT {MEMBER_COLUMNS} FROM members WHERE tenant_id = $1 AND id = $2"
    ))
    .bind(tenant_id)
    .bind(member_id)
    .fetch_optional(pool)
    .await
}

/// Members of one status, or (`None`) everyone not removed.
pub async fn members_page(
    pool: &PgPool,
    tenant_id: TenantId,
    status: Option<&str>,
    after: Option<MemberId>,
    limit: i64,
) -> sqlx::Result<Vec<MemberRow>> {
    sqlx::query_as(&format!(
        "SELECT {MEMBER_COLUMNS} FROM members
          WHERE tenant_id = $1
            AND ($2::text IS NULL AND status <> 'removed' OR status = $2)
            AND ($3::uuid IS NULL OR id > $3)
          ORDER BY id LIMIT $4"
    ))
    .bind(tenant_id)
    .bind(status)
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// The role of an active member of the tenant (whom the platform admin may
/// impersonate).
pub async fn active_member_role(
    pool: &PgPool,
    tenant_id: TenantId,
    member_id: MemberId,
) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar("SELECT role FROM members WHERE id = $1 AND tenant_id = $2 AND status = 'active'")
        .bind(member_id)
        .bind(tenant_id)
        .fetch_optional(pool)
        .await
}

pub async fn invitations_page(
    pool: &PgPool,
    tenant_id: TenantId,
    after: Option<InvitationId>,
    limit: i64,
) -> sqlx::Result<Vec<InvitationRow>> {
    sqlx::query_as(&format!(
        "SELECT {INVITATION_COLUMNS} FROM invitations
          WHERE tenant_id = $1 AND ($2::uuid IS NULL OR id > $2) ORDER BY id LIMIT $3"
    ))
    .bind(tenant_id)
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// The tenant's API keys, or (`only_member`) one member's.
pub async fn api_keys_page(
    pool: &PgPool,
    tenant_id: TenantId,
    only_member: Option<MemberId>,
    after: Option<ApiKeyId>,
    limit: i64,
) -> sqlx::Result<Vec<ApiKeyRow>> {
    sqlx::query_as(&format!(
        "SELECT {API_KEY_COLUMNS} FROM api_keys
          WHERE tenant_id = $1 AND ($2::uuid IS NULL OR member_id = $2) AND ($3::uuid IS NULL OR id > $3)
          ORDER BY id LIMIT $4"
    ))
    .bind(tenant_id)
    .bind(only_member)
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// An unrevoked key with its member's role and status and its tenant's
/// status: everything authentication decides on.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct KeyHolder {
    pub tenant_id: TenantId,
    pub member_id: MemberId,
    pub secret_hash: String,
    pub role: String,
    pub member_status: String,
    pub tenant_status: String,
}

/// The only query joining several directory tables: if a rebuild's table
/// switch picks it as a deadlock victim, it is read-only and simply asked
/// again.
pub async fn key_holder(pool: &PgPool, key_id: ApiKeyId) -> sqlx::Result<Option<KeyHolder>> {
    let query = || {
        sqlx::query_as::<_, KeyHolder>(
            "SELECT k.tenant_id, k.member_id, k.secret_hash, m.role, m.status AS member_status,
                    t.status AS tenant_status
               FROM api_keys k
               JOIN members m ON m.id = k.member_id
               JOIN tenants t ON t.id = k.tenant_id
              WHERE k.id = $1 AND k.revoked_at IS NULL",
        )
        .bind(key_id)
        .fetch_optional(pool)
    };
    match query().await {
        Err(sqlx::Error::Database(error)) if error.code().as_deref() == Some("40P01") => query().await,
        other => other,
    }
}
