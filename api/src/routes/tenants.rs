//! Tenants: public sign-up (or a child tenant under a parent), the profile,
//! and soft deletion.

use super::{Fields, etag, if_match};
use crate::auth::{Principal, RequestInfo, anonymous_metadata};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath, ApiQuery, double_option};
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use coverwatch_commands::secrets::{api_key_display_prefix, new_api_key};
use coverwatch_domain::tenant::{Actor, NewApiKey, ParentTenant, ProfileChanges, TenantCommand, Versioned};
use coverwatch_domain::values::{Email, Label, Name, Role, Slug};
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

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
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

pub const TENANT_COLUMNS: &str = "id, slug, name, industry, company_size, contact_email, billing_email, \
    owner_member_id, parent_id, hierarchy_path, status, suspended_reason, version, created_at, updated_at";

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

/// A fresh API key for a member: the plaintext for the response, the hash for the event.
pub fn generate_key(name: &str) -> (NewApiKey, String) {
    let key_id = Uuid::now_v7();
    let generated = new_api_key(key_id);
    let key = NewApiKey {
        key_id,
        name: Name::parse(name).expect("key names used here are valid"),
        prefix: api_key_display_prefix(key_id),
        secret_hash: generated.hash,
    };
    (key, generated.plaintext)
}

pub async fn load_view(state: &AppState, tenant_id: Uuid) -> ApiResult<TenantView> {
    sqlx::query_as::<_, TenantView>(&format!(
        "SELECT {TENANT_COLUMNS} FROM tenants WHERE id = $1 AND status <> 'deleted'"
    ))
    .bind(tenant_id)
    .fetch_optional(&state.pool)
    .await?
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
    headers: HeaderMap,
    ApiJson(body): ApiJson<CreateTenant>,
) -> ApiResult<impl IntoResponse> {
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
            let principal = Principal::authenticate(&headers, &state).await?;
            let member = principal.in_tenant(parent_id, &state, &headers).await?;
            member.require(
                Role::can_administer,
                "only an owner or admin of the parent creates child tenants",
            )?;
            let parent = state.tenants.load(parent_id).await?;
            Some(ParentTenant {
                id: parent_id,
                hierarchy_path: parent.hierarchy_path,
            })
        }
    };

    let tenant_id = Uuid::now_v7();
    let owner_member_id = Uuid::now_v7();
    let (owner_key, plaintext) = generate_key("default");
    let api_key_id = owner_key.key_id;
    let hierarchy_path: Vec<Uuid> = parent
        .as_ref()
        .map(|p| p.hierarchy_path.iter().copied().chain([p.id]).collect())
        .unwrap_or_default();
    let parent_tenant_id = parent.as_ref().map(|p| p.id);
    let command = TenantCommand::Create {
        tenant_id,
        name: name.clone(),
        slug: slug.clone(),
        owner_member_id,
        owner_email: owner_email.clone(),
        owner_key,
        industry,
        company_size,
        contact_email,
        billing_email,
        parent,
    };
    let metadata = anonymous_metadata(tenant_id, &format!("member:{owner_member_id}"), &info);
    let committed = match state.tenants.execute(tenant_id, command.into(), &metadata).await {
        // A fresh tenant id cannot conflict: the log's unique slug index did.
        Err(coverwatch_commands::CommandError::Conflict) => {
            return Err(ApiError::Conflict(format!("the slug {slug} is already taken")));
        }
        other => other?,
    };
    state.settle(committed).await;
    // Every tenant starts on FREE, active.
    state.ensure_subscription(tenant_id).await?;
    let created = CreatedTenant {
        id: tenant_id,
        slug: slug.into(),
        name: name.into(),
        status: "active".into(),
        owner_member_id,
        owner_email: owner_email.into(),
        parent_tenant_id,
        hierarchy_path,
        version: committed.version,
        api_key: plaintext,
        api_key_id,
    };
    Ok((
        StatusCode::CREATED,
        [
            etag(committed.version),
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
    ApiPath(tenant_id): ApiPath<Uuid>,
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
    ApiPath(tenant_id): ApiPath<Uuid>,
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
    state.settle(committed).await;
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
    ApiPath(tenant_id): ApiPath<Uuid>,
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
    tenant_id: Uuid,
    command: TenantCommand,
) -> ApiResult<TenantView> {
    let metadata = anonymous_metadata(tenant_id, "platform-admin", info);
    let committed = state.tenants.execute(tenant_id, command.into(), &metadata).await?;
    state.settle(committed).await;
    load_view(state, tenant_id).await
}

pub fn platform_admin() -> Actor {
    Actor::PlatformAdmin
}
