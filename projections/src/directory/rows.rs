//! The directory's rows, defined once: the subscriber writes them, the
//! queries read them, the API builds its responses from them, and replay
//! folds them as of an instant.

use chrono::{DateTime, Utc};
use coverwatch_domain::ids::{ApiKeyId, InvitationId, MemberId, TenantId};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct TenantRow {
    pub id: TenantId,
    pub slug: String,
    pub name: String,
    pub industry: Option<String>,
    pub company_size: Option<String>,
    pub contact_email: Option<String>,
    pub billing_email: Option<String>,
    pub owner_member_id: MemberId,
    pub parent_id: Option<TenantId>,
    pub hierarchy_path: Vec<TenantId>,
    pub status: String,
    pub suspended_reason: Option<String>,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub deleted_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct MemberRow {
    pub id: MemberId,
    pub tenant_id: TenantId,
    pub email: String,
    pub role: String,
    pub status: String,
    pub joined_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct InvitationRow {
    pub id: InvitationId,
    pub tenant_id: TenantId,
    pub email: String,
    pub role: String,
    pub status: String,
    pub invited_by: String,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct ApiKeyRow {
    pub id: ApiKeyId,
    pub tenant_id: TenantId,
    pub member_id: MemberId,
    pub name: String,
    pub prefix: String,
    pub secret_hash: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}
