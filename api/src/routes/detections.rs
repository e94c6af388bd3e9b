//! Detections: register, list, read, change (name, techniques, scope),
//! disable, enable and retire. Techniques are checked against the ATT&CK
//! catalog; an account scope must name a connected account of the tenant, an
//! organization scope the tenant's organization and (for a subset) its
//! discovered members. Organization scope needs the plan's organization
//! features (decided in the aggregate).

use super::{Fields, Page, etag, if_match, limit, page, uuid_cursor};
use crate::auth::{Member, Principal, RequestInfo};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use coverwatch_commands::services::detections::{DetectionChange, NewDetection};
use coverwatch_domain::attack::{self, Confidence, TechniqueId};
use coverwatch_domain::cloud::values::AwsAccountId;
use coverwatch_domain::detection::{DetectionCommand, DetectionScope, DetectionSource, Techniques};
use coverwatch_domain::ids::{DetectionId, OrganizationId, TenantId};
use coverwatch_domain::values::{Name, Role};
use coverwatch_projections::cloud::queries as cloud;
use coverwatch_projections::coverage::queries::{self, DetectionFilter, DetectionRow};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeSet;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

/// A technique and how much the detection covers it.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TechniqueInput {
    /// `T1234` or `T1234.001`, in the ATT&CK catalog.
    pub id: String,
    /// In [0, 1]; a technique counts as covered from 0.6.
    pub confidence: f64,
}

/// `{"type": "account", "account_id": ...}` or `{"type": "organization",
/// "organization_id": ..., "accounts": "all" | [account ids]}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScopeInput {
    #[serde(rename = "type")]
    pub kind: String,
    pub account_id: Option<String>,
    pub organization_id: Option<Uuid>,
    #[schema(value_type = Object)]
    pub accounts: Option<Value>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterDetection {
    pub name: String,
    /// guardduty, securityhub_control, config_rule, cloudtrail_metric_filter,
    /// eventbridge_rule, scc_finding, log_sink or custom.
    pub source: String,
    pub techniques: Vec<TechniqueInput>,
    pub scope: ScopeInput,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeDetection {
    pub name: Option<String>,
    pub techniques: Option<Vec<TechniqueInput>>,
    pub scope: Option<ScopeInput>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DetectionView {
    pub detection_id: Uuid,
    pub name: String,
    pub source: String,
    pub techniques: Vec<TechniqueInput>,
    /// As registered: account, or organization with `accounts` "all" or a list.
    #[schema(value_type = Object)]
    pub scope: Value,
    /// enabled, disabled or retired.
    pub status: String,
    pub attack_version: String,
    /// For detections Coverwatch derived from an organization source.
    pub derived_source_id: Option<String>,
    pub mapping_version: Option<String>,
    pub registered_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Also the `ETag`: send it as `If-Match` to change the detection only
    /// if nobody changed it since.
    pub version: i64,
}

fn scope_view(scope: &DetectionScope) -> Value {
    match scope {
        DetectionScope::Account { account_id } => serde_json::json!({"type": "account", "account_id": account_id}),
        DetectionScope::Organization {
            organization_id,
            accounts,
        } => serde_json::json!({
            "type": "organization", "organization_id": organization_id,
            "accounts": match accounts { None => Value::from("all"), Some(set) => serde_json::json!(set) },
        }),
    }
}

impl From<DetectionRow> for DetectionView {
    fn from(row: DetectionRow) -> Self {
        Self {
            detection_id: row.detection_id.into(),
            name: row.name,
            source: row.source,
            techniques: row
                .techniques
                .0
                .iter()
                .map(|(t, c)| TechniqueInput {
                    id: t.to_string(),
                    confidence: c.value(),
                })
                .collect(),
            scope: scope_view(&row.scope.0),
            status: row.status,
            attack_version: row.attack_version,
            derived_source_id: row.derived_source_id,
            mapping_version: row.mapping_version,
            registered_at: row.registered_at,
            updated_at: row.updated_at,
            version: row.version,
        }
    }
}

/// Techniques parsed and checked against the newest catalog, all errors at once.
fn techniques(fields: &mut Fields, input: &[TechniqueInput]) -> Option<Techniques> {
    let catalog = attack::latest();
    if input.is_empty() || input.len() > 1000 {
        fields.check::<(), _>("techniques", Err("list 1 to 1,000 techniques"));
        return None;
    }
    let mut parsed = Techniques::new();
    let mut ok = true;
    for (i, technique) in input.iter().enumerate() {
        let field = format!("techniques[{i}]");
        let id = fields.check(&format!("{field}.id"), TechniqueId::parse(&technique.id));
        let confidence = fields.check(&format!("{field}.confidence"), Confidence::parse(technique.confidence));
        match (id, confidence) {
            (Some(id), Some(confidence)) => {
                if catalog.get(&id).is_none() {
                    fields.check::<(), _>(
                        &format!("{field}.id"),
                        Err(format!("{id} is not a technique of ATT&CK {}", catalog.attack_version)),
                    );
                    ok = false;
                } else if parsed.insert(id.clone(), confidence).is_some() {
                    fields.check::<(), _>(&format!("{field}.id"), Err(format!("{id} is listed twice")));
                    ok = false;
                }
            }
            _ => ok = false,
        }
    }
    ok.then_some(parsed)
}

/// The scope, checked against what the tenant has (connected accounts, its
/// organizations and their members).
async fn scope(
    state: &AppState,
    tenant_id: TenantId,
    fields: &mut Fields,
    input: &ScopeInput,
) -> ApiResult<Option<DetectionScope>> {
    match input.kind.as_str() {
        "account" => {
            if input.organization_id.is_some() || input.accounts.is_some() {
                fields.check::<(), _>(
                    "scope",
                    Err("an account-scoped detection names exactly one account and no organization or subset"),
                );
                return Ok(None);
            }
            let Some(account_id) = fields.check_opt(
                "scope.account_id",
                input.account_id.as_deref().or(Some("")),
                AwsAccountId::parse,
            ) else {
                return Ok(None);
            };
            let connected = cloud::is_connected(&state.pool, tenant_id, account_id.as_str()).await?;
            if !connected {
                fields.check::<(), _>("scope.account_id", Err("is not a connected account of the tenant"));
                return Ok(None);
            }
            Ok(Some(DetectionScope::Account { account_id }))
        }
        "organization" => {
            if input.account_id.is_some() {
                fields.check::<(), _>(
                    "scope.account_id",
                    Err("an organization scope lists accounts in `accounts`"),
                );
                return Ok(None);
            }
            let Some(organization_id) = input.organization_id.map(OrganizationId::from) else {
                fields.check::<(), _>("scope.organization_id", Err("is required"));
                return Ok(None);
            };
            if cloud::organization(&state.pool, tenant_id, organization_id)
                .await?
                .is_none()
            {
                fields.check::<(), _>(
                    "scope.organization_id",
                    Err("is not a cloud organization of the tenant"),
                );
                return Ok(None);
            }
            let accounts = match &input.accounts {
                None => None,
                Some(Value::String(all)) if all == "all" => None,
                Some(Value::Array(list)) => {
                    let mut set = BTreeSet::new();
                    for item in list {
                        let parsed = item
                            .as_str()
                            .ok_or("must be account ids")
                            .and_then(|s| AwsAccountId::parse(s).map_err(|_| "must be 12-digit account ids"));
                        if let Some(id) = fields.check("scope.accounts", parsed) {
                            set.insert(id);
                        }
                    }
                    if set.is_empty() {
                        fields.check::<(), _>("scope.accounts", Err("must be \"all\" or a non-empty list"));
                        return Ok(None);
                    }
                    let ids: Vec<&str> = set.iter().map(|a| a.as_str()).collect();
                    let members = cloud::count_members(&state.pool, organization_id, &ids).await?;
                    if members != ids.len() as i64 {
                        fields.check::<(), _>(
                            "scope.accounts",
                            Err("lists accounts that are not members of the organization"),
                        );
                        return Ok(None);
                    }
                    Some(set)
                }
                Some(_) => {
                    fields.check::<(), _>("scope.accounts", Err("must be \"all\" or a non-empty list"));
                    return Ok(None);
                }
            };
            Ok(Some(DetectionScope::Organization {
                organization_id,
                accounts,
            }))
        }
        _ => {
            fields.check::<(), _>("scope.type", Err("must be account or organization"));
            Ok(None)
        }
    }
}

async fn view(state: &AppState, tenant_id: TenantId, detection_id: DetectionId) -> ApiResult<DetectionView> {
    queries::detection(&state.pool, tenant_id, detection_id)
        .await?
        .map(DetectionView::from)
        .ok_or_else(|| ApiError::NotFound("detection".into()))
}

async fn writer(state: &AppState, principal: Principal, headers: &HeaderMap, tenant_id: TenantId) -> ApiResult<Member> {
    let member = principal.in_tenant(tenant_id, state, headers).await?;
    member.require(
        Role::can_manage_detections,
        "only an owner, admin or analyst manages detections",
    )?;
    Ok(member)
}

fn detection_location(tenant_id: TenantId, detection_id: DetectionId) -> String {
    format!("/v1/tenants/{tenant_id}/detections/{detection_id}")
}

/// The detection as the read model shows it, with its version as `ETag`.
async fn respond(
    state: &AppState,
    tenant_id: TenantId,
    detection_id: DetectionId,
) -> ApiResult<impl IntoResponse + use<>> {
    let view = view(state, tenant_id, detection_id).await?;
    Ok(([etag(view.version)], Json(view)))
}

/// Register a detection (owner, admin or analyst).
#[utoipa::path(post, path = "/v1/tenants/{tenant_id}/detections", tag = "detections",
    params(("tenant_id" = Uuid, Path)), request_body = RegisterDetection, security(("api_key" = [])),
    responses((status = 201, body = DetectionView), (status = 400, body = crate::error::Problem),
              (status = 403, body = crate::error::Problem)))]
pub async fn register(
    State(state): State<AppState>,
    principal: Principal,
    info: RequestInfo,
    headers: HeaderMap,
    ApiPath(tenant_id): ApiPath<TenantId>,
    ApiJson(body): ApiJson<RegisterDetection>,
) -> ApiResult<impl IntoResponse> {
    let member = writer(&state, principal, &headers, tenant_id).await?;
    let mut fields = Fields::default();
    let name = fields.check("name", Name::parse(&body.name));
    let source = fields.check("source", DetectionSource::parse(&body.source));
    let techniques = techniques(&mut fields, &body.techniques);
    let scope = scope(&state, tenant_id, &mut fields, &body.scope).await?;
    fields.finish()?;
    let detection = NewDetection {
        name: name.expect("checked"),
        source: source.expect("checked"),
        techniques: techniques.expect("checked"),
        scope: scope.expect("checked"),
    };
    let (detection_id, committed) = state
        .detections
        .register(tenant_id, detection, &member.metadata(&info))
        .await?;
    state
        .settle_or_accepted(committed, detection_location(tenant_id, detection_id))
        .await?;
    Ok((StatusCode::CREATED, respond(&state, tenant_id, detection_id).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DetectionQuery {
    /// enabled, disabled or retired.
    pub status: Option<String>,
    pub source: Option<String>,
    /// Account-scoped detections of this account.
    pub account_id: Option<String>,
    /// Organization-scoped detections of this organization.
    pub organization_id: Option<Uuid>,
    /// Detections listing this technique.
    pub technique: Option<String>,
    pub cursor: Option<String>,
    pub limit: Option<i64>,
}

/// The tenant's detections, oldest first, filtered (members).
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/detections", tag = "detections",
    params(("tenant_id" = Uuid, Path), DetectionQuery), security(("api_key" = [])),
    responses((status = 200, body = Page<DetectionView>)))]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    ApiPath(tenant_id): ApiPath<TenantId>,
    ApiQuery(query): ApiQuery<DetectionQuery>,
) -> ApiResult<Json<Page<DetectionView>>> {
    principal.in_tenant(tenant_id, &state, &headers).await?;
    let mut fields = Fields::default();
    if let Some(status) = query.status.as_deref()
        && !["enabled", "disabled", "retired"].contains(&status)
    {
        fields.check::<(), _>("status", Err("must be enabled, disabled or retired"));
    }
    fields.check_opt("source", query.source.as_deref(), DetectionSource::parse);
    fields.check_opt("account_id", query.account_id.as_deref(), AwsAccountId::parse);
    fields.check_opt("technique", query.technique.as_deref(), TechniqueId::parse);
    fields.finish()?;
    let cursor: Option<DetectionId> = uuid_cursor(query.cursor.as_deref())?;
    let limit = limit(query.limit)?;
    let filter = DetectionFilter {
        status: query.status,
        source: query.source,
        account_id: query.account_id,
        organization_id: query.organization_id.map(Into::into),
        technique: query.technique,
    };
    let rows = queries::detections_page(&state.pool, tenant_id, &filter, cursor, limit + 1).await?;
    let (items, next_cursor) = page(rows, limit, |r| r.detection_id.to_string());
    Ok(Json(Page {
        items: items.into_iter().map(DetectionView::from).collect(),
        next_cursor,
    }))
}

/// One detection (members); the `ETag` is its version.
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/detections/{detection_id}", tag = "detections",
    params(("tenant_id" = Uuid, Path), ("detection_id" = Uuid, Path)), security(("api_key" = [])),
    responses((status = 200, body = DetectionView), (status = 404, body = crate::error::Problem)))]
pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    ApiPath((tenant_id, detection_id)): ApiPath<(TenantId, DetectionId)>,
) -> ApiResult<impl IntoResponse> {
    principal.in_tenant(tenant_id, &state, &headers).await?;
    respond(&state, tenant_id, detection_id).await
}

/// Change a detection's name, techniques and/or scope (owner, admin or
/// analyst), all or nothing; `If-Match` guards against lost updates (412 when
/// stale).
#[utoipa::path(patch, path = "/v1/tenants/{tenant_id}/detections/{detection_id}", tag = "detections",
    params(("tenant_id" = Uuid, Path), ("detection_id" = Uuid, Path)), request_body = ChangeDetection,
    security(("api_key" = [])),
    responses((status = 200, body = DetectionView), (status = 404, body = crate::error::Problem),
              (status = 410, body = crate::error::Problem), (status = 412, body = crate::error::Problem)))]
pub async fn change(
    State(state): State<AppState>,
    principal: Principal,
    info: RequestInfo,
    headers: HeaderMap,
    ApiPath((tenant_id, detection_id)): ApiPath<(TenantId, DetectionId)>,
    ApiJson(body): ApiJson<ChangeDetection>,
) -> ApiResult<impl IntoResponse> {
    let member = writer(&state, principal, &headers, tenant_id).await?;
    let expected_version = if_match(&headers)?;
    view(&state, tenant_id, detection_id).await?;
    let mut fields = Fields::default();
    let name = fields.check_opt("name", body.name.as_deref(), Name::parse);
    let techniques = body.techniques.as_deref().and_then(|t| techniques(&mut fields, t));
    let scope = match &body.scope {
        Some(input) => scope(&state, tenant_id, &mut fields, input).await?,
        None => None,
    };
    if body.name.is_none() && body.techniques.is_none() && body.scope.is_none() {
        fields.check::<(), _>("body", Err("change at least one of name, techniques or scope"));
    }
    fields.finish()?;
    let change = DetectionChange {
        name,
        techniques,
        scope,
    };
    let committed = state
        .detections
        .change(
            tenant_id,
            detection_id,
            change,
            expected_version,
            &member.metadata(&info),
        )
        .await?;
    state
        .settle_or_accepted(committed, detection_location(tenant_id, detection_id))
        .await?;
    respond(&state, tenant_id, detection_id).await
}

async fn transition(
    state: AppState,
    principal: Principal,
    info: RequestInfo,
    headers: HeaderMap,
    tenant_id: TenantId,
    detection_id: DetectionId,
    command: DetectionCommand,
) -> ApiResult<impl IntoResponse> {
    let member = writer(&state, principal, &headers, tenant_id).await?;
    let expected_version = if_match(&headers)?;
    view(&state, tenant_id, detection_id).await?;
    let committed = state
        .detections
        .execute(detection_id, command, expected_version, &member.metadata(&info))
        .await?;
    state
        .settle_or_accepted(committed, detection_location(tenant_id, detection_id))
        .await?;
    respond(&state, tenant_id, detection_id).await
}

/// Retire a detection (owner, admin or analyst): it stays listed, covers nothing.
#[utoipa::path(delete, path = "/v1/tenants/{tenant_id}/detections/{detection_id}", tag = "detections",
    params(("tenant_id" = Uuid, Path), ("detection_id" = Uuid, Path)), security(("api_key" = [])),
    responses((status = 200, body = DetectionView), (status = 410, body = crate::error::Problem),
              (status = 412, body = crate::error::Problem)))]
pub async fn retire(
    State(state): State<AppState>,
    principal: Principal,
    info: RequestInfo,
    headers: HeaderMap,
    ApiPath((tenant_id, detection_id)): ApiPath<(TenantId, DetectionId)>,
) -> ApiResult<impl IntoResponse> {
    transition(
        state,
        principal,
        info,
        headers,
        tenant_id,
        detection_id,
        DetectionCommand::Retire,
    )
    .await
}

/// Disable a detection: it stops counting towards coverage.
#[utoipa::path(post, path = "/v1/tenants/{tenant_id}/detections/{detection_id}/disable", tag = "detections",
    params(("tenant_id" = Uuid, Path), ("detection_id" = Uuid, Path)), security(("api_key" = [])),
    responses((status = 200, body = DetectionView)))]
pub async fn disable(
    State(state): State<AppState>,
    principal: Principal,
    info: RequestInfo,
    headers: HeaderMap,
    ApiPath((tenant_id, detection_id)): ApiPath<(TenantId, DetectionId)>,
) -> ApiResult<impl IntoResponse> {
    transition(
        state,
        principal,
        info,
        headers,
        tenant_id,
        detection_id,
        DetectionCommand::Disable,
    )
    .await
}

/// Enable a disabled detection.
#[utoipa::path(post, path = "/v1/tenants/{tenant_id}/detections/{detection_id}/enable", tag = "detections",
    params(("tenant_id" = Uuid, Path), ("detection_id" = Uuid, Path)), security(("api_key" = [])),
    responses((status = 200, body = DetectionView)))]
pub async fn enable(
    State(state): State<AppState>,
    principal: Principal,
    info: RequestInfo,
    headers: HeaderMap,
    ApiPath((tenant_id, detection_id)): ApiPath<(TenantId, DetectionId)>,
) -> ApiResult<impl IntoResponse> {
    transition(
        state,
        principal,
        info,
        headers,
        tenant_id,
        detection_id,
        DetectionCommand::Enable,
    )
    .await
}
