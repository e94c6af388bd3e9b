//! Tenants: public sign-up (or a child tenant under a parent), the profile,
//! and soft deletion.

use super::{Fields, etag, if_match};
use crate::auth::{ClientAddress, Principal, RequestInfo, anonymous_metadata};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath, ApiQuery, double_option};
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use coverwatch_commands::CommandError;
use coverwatch_commands::idempotency::fresh_id;
use coverwatch_commands::services::tenants::SignUp;
use coverwatch_domain::ids::TenantId;
use coverwatch_domain::tenant::{Actor, ProfileChanges, TenantCommand, Versioned};
use coverwatch_domain::values::{Email, Label, Name, Role, Slug};
use coverwatch_projections::directory::{TenantRow, queries};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    pub name: String,
    pub slug: String,
    pub owner_email: String,
    pub industry: Option<String>,
    pub company_size: Option<String>,
    pub contact_email: Option<String>,
    pub billing_email: Option<String>,
    /// Create a child tenant (MSSP/enterprise); needs an owner's or admin's
    /// key of the parent.
    pub parent_tenant_id: Option<Uuid>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedTenant {
    pub id: Uuid,
    pub slug: String,
    pub name: String,
    pub status: String,
    pub owner_member_id: Uuid,
    pub owner_email: String,
    pub parent_tenant_id: Option<Uuid>,
    pub hierarchy_path: Vec<Uuid>,
    pub version: u64,
    /// The owner's API key. Shown once: only its hash is stored.
    pub api_key: String,
    pub api_key_id: Uuid,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TenantView {
    pub id: Uuid,
    pub slug: String,
    pub name: String,
    pub industry: Option<String>,
    pub company_size: Option<String>,
    pub contact_email: Option<String>,
    pub billing_email: Option<String>,
    pub owner_member_id: Uuid,
    pub parent_id: Option<Uuid>,
    pub hierarchy_path: Vec<Uuid>,
    pub status: String,
    pub suspended_reason: Option<String>,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<TenantRow> for TenantView {
    fn from(row: TenantRow) -> Self {
        Self {
            id: row.id.into(),
            slug: row.slug,
            name: row.name,
            industry: row.industry,
            company_size: row.company_size,
            contact_email: row.contact_email,
            billing_email: row.billing_email,
            owner_member_id: row.owner_member_id.into(),
            parent_id: row.parent_id.map(Into::into),
            hierarchy_path: row.hierarchy_path.into_iter().map(Into::into).collect(),
            status: row.status,
            suspended_reason: row.suspended_reason,
            version: row.version,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTenant {
    pub name: Option<String>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub industry: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub company_size: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub contact_email: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub billing_email: Option<Option<String>>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DeleteTenant {
    /// The tenant's slug, typed again as confirmation.
    pub confirm_slug: String,
}

pub async fn load_view(state: &AppState, tenant_id: TenantId) -> ApiResult<TenantView> {
    queries::tenant(&state.pool, tenant_id)
        .await?
        .map(TenantView::from)
        .ok_or_else(|| ApiError::NotFound("tenant".into()))
}

fn labels(fields: &mut Fields, name: &str, value: Option<Option<String>>) -> Option<Option<Label>> {
    value.map(|v| v.and_then(|v| fields.check(name, Label::parse(&v))))
}

fn emails(fields: &mut Fields, name: &str, value: Option<Option<String>>) -> Option<Option<Email>> {
    value.map(|v| v.and_then(|v| fields.check(name, Email::parse(&v))))
}

/// Sign up: create a tenant and its owner; the owner's API key is returned once.
#[utoipa::path(post, path = "/v1/tenants", tag = "tenants", request_body = CreateTenant,
    responses((status = 201, body = CreatedTenant), (status = 409, body = crate::error::Problem),
              (status = 422, body = crate::error::Problem)))]
pub async fn create_tenant(
    State(state): State<AppState>,
    info: RequestInfo,
    ClientAddress(address): ClientAddress,
    headers: HeaderMap,
    principal: Result<Principal, ApiError>,
    ApiJson(body): ApiJson<CreateTenant>,
) -> ApiResult<impl IntoResponse> {
    if body.parent_tenant_id.is_none() {
        // A child tenant counts against its parent's rate; a sign-up against its address.
        crate::rate_limit::sign_up(&state, address).await?;
    }
    let mut fields = Fields::default();
    let name = fields.check("name", Name::parse(&body.name));
    let slug = fields.check("slug", Slug::parse(&body.slug));
    let owner_email = fields.check("owner_email", Email::parse(&body.owner_email));
    let industry = fields.check_opt("industry", body.industry.as_deref(), Label::parse);
    let company_size = fields.check_opt("company_size", body.company_size.as_deref(), Label::parse);
    let contact_email = fields.check_opt("contact_email", body.contact_email.as_deref(), Email::parse);
    let billing_email = fields.check_opt("billing_email", body.billing_email.as_deref(), Email::parse);
    fields.finish()?;
    let (name, slug, owner_email) = (name.unwrap(), slug.unwrap(), owner_email.unwrap());

    let parent = match body.parent_tenant_id {
        None => None,
        Some(parent_id) => {
            let parent_id = TenantId::from(parent_id);
            let member = principal?.in_tenant(parent_id, &state, &headers).await?;
            member.require(
                Role::can_administer,
                "only an owner or admin of the parent creates child tenants",
            )?;
            Some(state.tenants.parent(parent_id).await?)
        }
    };
    let parent_tenant_id = parent.as_ref().map(|p| p.id.into());
    let (tenant_id, owner_member_id) = (fresh_id("tenant"), fresh_id("member"));
    let sign_up = SignUp {
        name: name.clone(),
        slug: slug.clone(),
        owner_email: owner_email.clone(),
        industry,
        company_size,
        contact_email,
        billing_email,
        parent,
    };
    let metadata = anonymous_metadata(tenant_id, &format!("member:{owner_member_id}"), &info);
    let signed_up = match state
        .tenants
        .sign_up(tenant_id, owner_member_id, sign_up, &metadata)
        .await
    {
        // A fresh tenant id cannot conflict: the log's unique slug index did.
        Err(CommandError::Conflict) => {
            return Err(ApiError::Conflict(format!("the slug {slug} is already taken")));
        }
        other => other?,
    };
    state.settle(signed_up.created).await;
    // Every tenant starts on FREE, active.
    if let Some(subscribed) = state.billing.ensure_subscription(tenant_id).await? {
        state.settle(subscribed).await;
    }
    let version = signed_up.created.version;
    let created = CreatedTenant {
        id: tenant_id.into(),
        slug: slug.into(),
        name: name.into(),
        status: "active".into(),
        owner_member_id: owner_member_id.into(),
        owner_email: owner_email.into(),
        parent_tenant_id,
        hierarchy_path: signed_up.hierarchy_path.into_iter().map(Into::into).collect(),
        version,
        api_key: signed_up.api_key,
        api_key_id: signed_up.api_key_id.into(),
    };
    Ok((
        StatusCode::CREATED,
        [
            etag(version),
            (
                header::LOCATION,
                format!("/v1/tenants/{tenant_id}").parse().expect("valid header"),
            ),
        ],
        Json(created),
    ))
}

/// The tenant's profile; the `ETag` is the tenant's version.
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}", tag = "tenants",
    params(("tenant_id" = Uuid, Path)), security(("api_key" = [])),
    responses((status = 200, body = TenantView), (status = 404, body = crate::error::Problem)))]
pub async fn get_tenant(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    ApiPath(tenant_id): ApiPath<TenantId>,
) -> ApiResult<impl IntoResponse> {
    principal.in_tenant(tenant_id, &state, &headers).await?;
    let view = load_view(&state, tenant_id).await?;
    Ok(([etag(view.version)], Json(view)))
}

/// Update the profile (owner or admin). `null` clears an optional field;
/// `If-Match` guards against lost updates (412 when stale).
#[utoipa::path(patch, path = "/v1/tenants/{tenant_id}", tag = "tenants", request_body = UpdateTenant,
    params(("tenant_id" = Uuid, Path)), security(("api_key" = [])),
    responses((status = 200, body = TenantView), (status = 412, body = crate::error::Problem),
              (status = 409, body = crate::error::Problem)))]
pub async fn update_tenant(
    State(state): State<AppState>,
    principal: Principal,
    info: RequestInfo,
    headers: HeaderMap,
    ApiPath(tenant_id): ApiPath<TenantId>,
    ApiJson(body): ApiJson<UpdateTenant>,
) -> ApiResult<impl IntoResponse> {
    let member = principal.in_tenant(tenant_id, &state, &headers).await?;
    let expected_version = if_match(&headers)?;
    let mut fields = Fields::default();
    let changes = ProfileChanges {
        name: fields.check_opt("name", body.name.as_deref(), Name::parse),
        industry: labels(&mut fields, "industry", body.industry),
        company_size: labels(&mut fields, "company_size", body.company_size),
        contact_email: emails(&mut fields, "contact_email", body.contact_email),
        billing_email: emails(&mut fields, "billing_email", body.billing_email),
    };
    fields.finish()?;
    let command = Versioned {
        expected_version,
        command: TenantCommand::UpdateProfile {
            by: member.actor(),
            changes,
        },
    };
    let committed = state
        .tenants
        .execute(tenant_id, command, &member.metadata(&info))
        .await?;
    state
        .settle_or_accepted(committed, format!("/v1/tenants/{tenant_id}"))
        .await?;
    let view = load_view(&state, tenant_id).await?;
    Ok(([etag(view.version)], Json(view)))
}

/// Soft-delete the tenant (owner only, with the slug as confirmation). The
/// history stays; the tenant and its keys stop answering.
#[utoipa::path(delete, path = "/v1/tenants/{tenant_id}", tag = "tenants",
    params(("tenant_id" = Uuid, Path), DeleteTenant), security(("api_key" = [])),
    responses((status = 204), (status = 403, body = crate::error::Problem), (status = 422, body = crate::error::Problem)))]
pub async fn delete_tenant(
    State(state): State<AppState>,
    principal: Principal,
    info: RequestInfo,
    headers: HeaderMap,
    ApiPath(tenant_id): ApiPath<TenantId>,
    ApiQuery(query): ApiQuery<DeleteTenant>,
) -> ApiResult<StatusCode> {
    let member = principal.in_tenant(tenant_id, &state, &headers).await?;
    let command = Versioned {
        expected_version: if_match(&headers)?,
        command: TenantCommand::Delete {
            by: member.actor(),
            confirm_slug: query.confirm_slug,
        },
    };
    let committed = state
        .tenants
        .execute(tenant_id, command, &member.metadata(&info))
        .await?;
    state.settle(committed).await;
    Ok(StatusCode::NO_CONTENT)
}

/// Platform admin actions share this helper.
pub async fn admin_command(
    state: &AppState,
    info: &RequestInfo,
    tenant_id: TenantId,
    command: TenantCommand,
) -> ApiResult<TenantView> {
    let metadata = anonymous_metadata(tenant_id, "platform-admin", info);
    let committed = state.tenants.execute(tenant_id, command.into(), &metadata).await?;
    state
        .settle_or_accepted(committed, format!("/v1/tenants/{tenant_id}"))
        .await?;
    load_view(state, tenant_id).await
}

pub fn platform_admin() -> Actor {
    Actor::PlatformAdmin
}
