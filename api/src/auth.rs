//! Authentication and tenant access. `Authorization: Bearer <key>` carries an
//! API key (a member's, with the member's role) or the platform admin token.
//! A member only ever reaches its own tenant: any other tenant is 404.

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{Extensions, HeaderMap, header};
use coverwatch_commands::CommandMetadata;
use coverwatch_commands::secrets::{parse_api_key, sha256_hex};
use coverwatch_domain::ids::{ApiKeyId, MemberId, TenantId};
use coverwatch_domain::tenant::Actor;
use coverwatch_domain::values::Role;
use coverwatch_projections::directory::queries;
use secrecy::ExposeSecret;
use std::net::{IpAddr, SocketAddr};
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

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.chars().take(512).collect::<String>())
        .filter(|v| !v.is_empty())
}

impl FromRequestParts<AppState> for RequestInfo {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let request_id = header_text(&parts.headers, "x-request-id").unwrap_or_else(|| Uuid::now_v7().to_string());
        Ok(Self {
            correlation_id: header_text(&parts.headers, "x-correlation-id").unwrap_or_else(|| request_id.clone()),
            request_id,
            client_ip: client_address(&parts.headers, &parts.extensions, state).map(|ip| ip.to_string()),
            user_agent: header_text(&parts.headers, header::USER_AGENT.as_str()),
        })
    }
}

/// The client's address: the socket's peer, or behind
/// `http.trusted_proxy_hops` proxies the entry that many from the right of
/// `X-Forwarded-For` (the address the outermost trusted proxy saw; entries
/// further left are whatever the client wrote).
pub fn client_address(headers: &HeaderMap, extensions: &Extensions, state: &AppState) -> Option<IpAddr> {
    let peer = extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip());
    let hops = state.settings.http.trusted_proxy_hops as usize;
    if hops == 0 {
        return peer;
    }
    let forwarded: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    forwarded
        .len()
        .checked_sub(hops)
        .and_then(|i| forwarded[i].parse().ok())
        .or(peer)
}

/// The client's address, as an extractor.
pub struct ClientAddress(pub Option<IpAddr>);

impl FromRequestParts<AppState> for ClientAddress {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        Ok(Self(client_address(&parts.headers, &parts.extensions, state)))
    }
}

pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// How the request's credential fared, decided once per request (the
/// suspension layer and the handler both ask; a failure counts once).
#[derive(Clone)]
enum Outcome {
    Accepted(Principal),
    Refused,
    Blocked { detail: String, retry_after_secs: u64 },
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        Self::of_request(&parts.headers, &mut parts.extensions, state).await
    }
}

impl Principal {
    /// The request's principal: its bearer credential checked once (the
    /// outcome kept in the request's extensions). A client address that
    /// failed too often this hour is refused (429) whatever it presents; a
    /// refused credential counts against its address.
    pub async fn of_request(headers: &HeaderMap, extensions: &mut Extensions, state: &AppState) -> ApiResult<Self> {
        let outcome = match extensions.get::<Outcome>() {
            Some(outcome) => outcome.clone(),
            None => {
                let Some(token) = bearer(headers) else {
                    return Err(ApiError::Unauthorized); // nothing presented, nothing counted
                };
                let address = client_address(headers, extensions, state);
                let outcome = match crate::rate_limit::before_authentication(state, address).await {
                    Err(ApiError::RateLimited {
                        detail,
                        retry_after_secs,
                    }) => Outcome::Blocked {
                        detail,
                        retry_after_secs,
                    },
                    Err(other) => return Err(other),
                    Ok(()) => match Self::verify(token, state).await? {
                        Some(principal) => Outcome::Accepted(principal),
                        None => {
                            crate::rate_limit::authentication_failed(state, address).await?;
                            Outcome::Refused
                        }
                    },
                };
                extensions.insert(outcome.clone());
                outcome
            }
        };
        match outcome {
            Outcome::Accepted(principal) => Ok(principal),
            Outcome::Refused => Err(ApiError::Unauthorized),
            Outcome::Blocked {
                detail,
                retry_after_secs,
            } => Err(ApiError::RateLimited {
                detail,
                retry_after_secs,
            }),
        }
    }

    /// The principal a bearer token stands for, if any.
    async fn verify(token: &str, state: &AppState) -> ApiResult<Option<Self>> {
        if let Some(admin) = &state.settings.http.admin_token
            && constant_time_eq(admin.expose_secret().as_bytes(), token.as_bytes())
        {
            return Ok(Some(Self::PlatformAdmin));
        }
        let Some(key_id) = parse_api_key(token).map(ApiKeyId::from) else {
            return Ok(None);
        };
        let Some(holder) = queries::key_holder(&state.pool, key_id).await? else {
            return Ok(None);
        };
        if !constant_time_eq(holder.secret_hash.as_bytes(), sha256_hex(token).as_bytes())
            || holder.member_status != "active"
            || holder.tenant_status == "deleted"
        {
            return Ok(None);
        }
        Ok(Some(Self::Member(Member {
            tenant_id: holder.tenant_id,
            member_id: holder.member_id,
            role: Role::parse(&holder.role).map_err(|e| ApiError::Internal(e.into()))?,
            key_id: Some(key_id),
            impersonated_by: None,
            tenant_suspended: holder.tenant_status == "suspended",
        })))
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
