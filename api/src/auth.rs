//! Authentication and tenant access. `Authorization: Bearer <key>` carries an
//! API key (a member's, with the member's role) or the platform admin token.
//! A member only ever reaches its own tenant: any other tenant is 404.

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use coverwatch_commands::CommandMetadata;
use coverwatch_commands::secrets::{parse_api_key, sha256_hex};
use coverwatch_domain::ids::{ApiKeyId, MemberId, TenantId};
use coverwatch_domain::tenant::Actor;
use coverwatch_domain::values::Role;
use coverwatch_projections::directory::queries;
use secrecy::ExposeSecret;
use std::net::SocketAddr;
use uuid::Uuid;

pub const IMPERSONATE_HEADER: &str = "x-coverwatch-impersonate";

/// Who made the request, authenticated.
#[derive(Debug, Clone)]
pub enum Principal {
    Member(Member),
    PlatformAdmin,
}

/// A member acting in its tenant (possibly impersonated by the platform admin).
#[derive(Debug, Clone)]
pub struct Member {
    pub tenant_id: TenantId,
    pub member_id: MemberId,
    pub role: Role,
    pub key_id: Option<ApiKeyId>,
    pub impersonated_by: Option<String>,
    /// The tenant is suspended: its members read but do not write.
    pub tenant_suspended: bool,
}

/// Where a request came from, for event metadata and the audit trail.
#[derive(Debug, Clone)]
pub struct RequestInfo {
    pub request_id: String,
    pub correlation_id: String,
    pub client_ip: Option<String>,
    pub user_agent: Option<String>,
}

fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.chars().take(512).collect::<String>())
        .filter(|v| !v.is_empty())
}

impl<S: Send + Sync> FromRequestParts<S> for RequestInfo {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let request_id = header_text(&parts.headers, "x-request-id").unwrap_or_else(|| Uuid::now_v7().to_string());
        Ok(Self {
            correlation_id: header_text(&parts.headers, "x-correlation-id").unwrap_or_else(|| request_id.clone()),
            request_id,
            client_ip: parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(addr)| addr.ip().to_string()),
            user_agent: header_text(&parts.headers, header::USER_AGENT.as_str()),
        })
    }
}

pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    /// The principal the suspension layer already authenticated, if it did.
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        if let Some(principal) = parts.extensions.get::<Principal>() {
            return Ok(principal.clone());
        }
        Self::authenticate(&parts.headers, state).await
    }
}

impl Principal {
    /// Resolve the bearer credential in `headers`.
    pub async fn authenticate(headers: &HeaderMap, state: &AppState) -> ApiResult<Self> {
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or(ApiError::Unauthorized)?;
        if let Some(admin) = &state.settings.http.admin_token
            && constant_time_eq(admin.expose_secret().as_bytes(), token.as_bytes())
        {
            return Ok(Self::PlatformAdmin);
        }
        let key_id = ApiKeyId::from(parse_api_key(token).ok_or(ApiError::Unauthorized)?);
        let Some(holder) = queries::key_holder(&state.pool, key_id).await? else {
            return Err(ApiError::Unauthorized);
        };
        if !constant_time_eq(holder.secret_hash.as_bytes(), sha256_hex(token).as_bytes())
            || holder.member_status != "active"
            || holder.tenant_status == "deleted"
        {
            return Err(ApiError::Unauthorized);
        }
        Ok(Self::Member(Member {
            tenant_id: holder.tenant_id,
            member_id: holder.member_id,
            role: Role::parse(&holder.role).map_err(|e| ApiError::Internal(e.into()))?,
            key_id: Some(key_id),
            impersonated_by: None,
            tenant_suspended: holder.tenant_status == "suspended",
        }))
    }

    /// The member acting in `tenant_id`. Another tenant's member gets 404, as
    /// if the tenant did not exist. The platform admin acts in a tenant only by
    /// impersonating one of its members (`X-Coverwatch-Impersonate`).
    /// Every request that reaches a tenant this way is rate-limited by the
    /// tenant's plan and metered.
    pub async fn in_tenant(&self, tenant_id: TenantId, state: &AppState, headers: &HeaderMap) -> ApiResult<Member> {
        let member = self.resolve_in_tenant(tenant_id, state, headers).await?;
        let client_request_id = header_text(headers, "x-request-id");
        crate::rate_limit::meter(state, tenant_id, client_request_id.as_deref()).await?;
        Ok(member)
    }

    async fn resolve_in_tenant(&self, tenant_id: TenantId, state: &AppState, headers: &HeaderMap) -> ApiResult<Member> {
        match self {
            Self::Member(member) if member.tenant_id == tenant_id => Ok(member.clone()),
            Self::Member(_) => Err(ApiError::NotFound("tenant".into())),
            Self::PlatformAdmin => {
                let member_id = header_text(headers, IMPERSONATE_HEADER)
                    .ok_or_else(|| {
                        ApiError::Forbidden(format!(
                            "the platform admin acts in a tenant by impersonating a member ({IMPERSONATE_HEADER})"
                        ))
                    })
                    .and_then(|v| {
                        v.parse::<MemberId>()
                            .map_err(|_| ApiError::validation(IMPERSONATE_HEADER, "is not a member id"))
                    })?;
                let role = queries::active_member_role(&state.pool, tenant_id, member_id).await?;
                let role = role.ok_or_else(|| ApiError::NotFound("member".into()))?;
                Ok(Member {
                    tenant_id,
                    member_id,
                    role: Role::parse(&role).map_err(|e| ApiError::Internal(e.into()))?,
                    key_id: None,
                    impersonated_by: Some("platform-admin".into()),
                    // The platform admin still acts in a suspended tenant.
                    tenant_suspended: false,
                })
            }
        }
    }

    pub fn require_admin(&self) -> ApiResult<()> {
        match self {
            Self::PlatformAdmin => Ok(()),
            Self::Member(_) => Err(ApiError::Forbidden("platform admin only".into())),
        }
    }
}

impl Member {
    pub fn actor(&self) -> Actor {
        Actor::Member(self.member_id)
    }

    pub fn metadata(&self, info: &RequestInfo) -> CommandMetadata {
        CommandMetadata {
            tenant_id: self.tenant_id,
            actor: format!("member:{}", self.member_id),
            api_key_id: self.key_id,
            request_id: info.request_id.clone(),
            correlation_id: info.correlation_id.clone(),
            causation_id: info.request_id.clone(),
            client_ip: info.client_ip.clone(),
            user_agent: info.user_agent.clone(),
            impersonated_by: self.impersonated_by.clone(),
        }
    }

    pub fn require(&self, allowed: fn(Role) -> bool, message: &str) -> ApiResult<()> {
        if allowed(self.role) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(message.into()))
        }
    }
}

/// Metadata for requests made without a member (sign-up, platform admin).
pub fn anonymous_metadata(tenant_id: TenantId, actor: &str, info: &RequestInfo) -> CommandMetadata {
    CommandMetadata {
        tenant_id,
        actor: actor.into(),
        api_key_id: None,
        request_id: info.request_id.clone(),
        correlation_id: info.correlation_id.clone(),
        causation_id: info.request_id.clone(),
        client_ip: info.client_ip.clone(),
        user_agent: info.user_agent.clone(),
        impersonated_by: None,
    }
}
