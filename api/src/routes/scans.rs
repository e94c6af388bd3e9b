//! Account scans: start one (an account, an organization's connected
//! accounts, or a subtree: 202 with the run), follow a run (accounts done
//! of total, calls, errors per account and service, naming the IAM action a
//! role lacks), read an account's inventory (what was found per service and
//! region, the gaps, its last scan), and narrow where scans look.

use super::Fields;
use super::cloud_accounts::{CloudAccountView, account_location, account_view};
use super::cloud_organizations::organization_of;
use crate::auth::{Principal, RequestInfo};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath};
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use coverwatch_commands::adapters::aws::scan::ScanError;
use coverwatch_commands::workflows::scan::{RunAccountRow, ScanScope, StartError};
use coverwatch_domain::cloud::values::{AwsAccountId, Region};
use coverwatch_domain::ids::{OrganizationId, RunId, TenantId};
use coverwatch_domain::scan::known_region;
use coverwatch_domain::values::Role;
use coverwatch_projections::coverage::queries as coverage;
use coverwatch_projections::inventory::queries as inventory;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use utoipa::ToSchema;
use uuid::Uuid;

impl From<StartError> for ApiError {
    fn from(error: StartError) -> Self {
        match error {
            StartError::NotConnected(_) => Self::NotFound(error.to_string()),
            StartError::UnknownOrganization => Self::NotFound("cloud organization".into()),
            StartError::NothingToScan => Self::Unprocessable(error.to_string()),
            StartError::AlreadyRunning(message) => Self::Conflict(message),
            StartError::Command(error) => error.into(),
        }
    }
}

/// A run that started: poll its location.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScanStarted {
    pub run_id: Uuid,
    pub status: String,
    pub location: String,
}

fn run_location(tenant_id: TenantId, run_id: RunId) -> String {
    format!("/v1/tenants/{tenant_id}/scans/{run_id}")
}

fn started(tenant_id: TenantId, run_id: RunId) -> impl IntoResponse {
    let location = run_location(tenant_id, run_id);
    let mut response = (
        StatusCode::ACCEPTED,
        Json(ScanStarted {
            run_id: run_id.into(),
            status: "running".into(),
            location: location.clone(),
        }),
    )
        .into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

fn can_scan(role: Role) -> bool {
    matches!(role, Role::Owner | Role::Admin | Role::Analyst)
}

/// Scan one connected account now (owner, admin or analyst): 202 with the
/// run; another scan of it queued or running goes first.
#[utoipa::path(post, path = "/v1/tenants/{tenant_id}/cloud-accounts/{account_id}/scan", tag = "scans",
    params(("tenant_id" = Uuid, Path), ("account_id" = String, Path)), security(("api_key" = [])),
    responses((status = 202, body = ScanStarted), (status = 404, body = crate::error::Problem)))]
pub async fn scan_account(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    ApiPath((tenant_id, account_id)): ApiPath<(TenantId, String)>,
) -> ApiResult<impl IntoResponse> {
    let member = principal.in_tenant(tenant_id, &state, &headers).await?;
    member.require(can_scan, "only an owner, admin or analyst starts scans")?;
    let account_id = AwsAccountId::parse(&account_id)?;
    let run_id = state
        .scans
        .start(tenant_id, ScanScope::Account(account_id), "on_demand")
        .await?;
    Ok(started(tenant_id, run_id))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScanOrganization {
    /// `Root/Production` scans that subtree's connected accounts only.
    pub path_prefix: Option<String>,
}

/// Scan the organization's connected accounts (or a subtree's) now (owner,
/// admin or analyst): 202 with the run; one run per organization at a time.
#[utoipa::path(post, path = "/v1/tenants/{tenant_id}/cloud-organizations/{org_id}/scan", tag = "scans",
    params(("tenant_id" = Uuid, Path), ("org_id" = Uuid, Path)), request_body = ScanOrganization,
    security(("api_key" = [])),
    responses((status = 202, body = ScanStarted), (status = 404, body = crate::error::Problem),
              (status = 409, body = crate::error::Problem)))]
pub async fn scan_organization(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    ApiPath((tenant_id, organization_id)): ApiPath<(TenantId, OrganizationId)>,
    body: axum::body::Bytes,
) -> ApiResult<impl IntoResponse> {
    let member = principal.in_tenant(tenant_id, &state, &headers).await?;
    member.require(can_scan, "only an owner, admin or analyst starts scans")?;
    organization_of(&state, tenant_id, organization_id).await?;
    // The body is optional: none scans every connected account.
    let ScanOrganization { path_prefix } = if body.iter().all(u8::is_ascii_whitespace) {
        ScanOrganization::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::validation("body", e.to_string()))?
    };
    if let Some(prefix) = &path_prefix
        && (prefix.is_empty() || prefix.len() > 1024 || !prefix.starts_with("Root"))
    {
        return Err(ApiError::validation(
            "path_prefix",
            "must be a path such as Root/Production",
        ));
    }
    let scope = ScanScope::Organization {
        organization_id,
        path_prefix,
    };
    let run_id = state.scans.start(tenant_id, scope, "on_demand").await?;
    Ok(started(tenant_id, run_id))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ScanErrorView {
    /// The service (or `sts`, `account` for the account itself).
    pub service: String,
    pub region: Option<String>,
    /// The IAM action of the call that failed.
    pub action: String,
    pub message: String,
    /// The role lacks `action`.
    pub missing_permission: bool,
    /// `account 111122223333, guardduty in eu-west-3: ... (the role lacks guardduty:GetDetector)`.
    pub description: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RunAccountView {
    pub account_id: String,
    /// queued, running, done, failed (nothing could be read) or skipped.
    pub status: String,
    pub attempts: i32,
    pub regions: Vec<String>,
    /// Calls made, per IAM action.
    pub calls: BTreeMap<String, u64>,
    pub errors: Vec<ScanErrorView>,
    /// Whether the scan recorded a change (null until it finished).
    pub changed: Option<bool>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// The worker process that scanned it last (host:pid).
    pub worker: Option<String>,
}

fn error_view(account_id: &str, error: ScanError) -> ScanErrorView {
    ScanErrorView {
        description: format!("account {account_id}, {}", error.describe()),
        service: error.service,
        region: error.region,
        action: error.action,
        message: error.message,
        missing_permission: error.missing_permission,
    }
}

impl From<RunAccountRow> for RunAccountView {
    fn from(row: RunAccountRow) -> Self {
        let account_id = row.account_id.clone();
        Self {
            errors: row.errors.0.into_iter().map(|e| error_view(&account_id, e)).collect(),
            account_id: row.account_id,
            status: row.status,
            attempts: row.attempts,
            regions: row.regions,
            calls: row.calls.0,
            changed: row.changed,
            started_at: row.started_at,
            finished_at: row.finished_at,
            worker: row.worker,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ScanProgress {
    pub accounts_total: i32,
    pub accounts_done: usize,
    pub accounts_failed: usize,
    pub accounts_running: usize,
    pub accounts_queued: usize,
    pub calls: u64,
    pub errors: usize,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ScanRunView {
    pub run_id: Uuid,
    /// account, organization or schedule.
    pub scope: String,
    pub scope_id: String,
    pub path_prefix: Option<String>,
    /// on_demand or scheduled.
    pub trigger: String,
    /// running or done.
    pub status: String,
    pub progress: ScanProgress,
    pub accounts: Vec<RunAccountView>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// A scan run: progress and, per account, what its scan did (members).
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/scans/{run_id}", tag = "scans",
    params(("tenant_id" = Uuid, Path), ("run_id" = Uuid, Path)), security(("api_key" = [])),
    responses((status = 200, body = ScanRunView), (status = 404, body = crate::error::Problem)))]
pub async fn get_run(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    ApiPath((tenant_id, run_id)): ApiPath<(TenantId, RunId)>,
) -> ApiResult<Json<ScanRunView>> {
    principal.in_tenant(tenant_id, &state, &headers).await?;
    let (run, accounts) = state
        .scans
        .run(tenant_id, run_id)
        .await?
        .ok_or_else(|| ApiError::NotFound("scan run".into()))?;
    let count = |status: &str| accounts.iter().filter(|a| a.status == status).count();
    let progress = ScanProgress {
        accounts_total: run.accounts_total,
        accounts_done: count("done") + count("skipped"),
        accounts_failed: count("failed"),
        accounts_running: count("running"),
        accounts_queued: count("queued"),
        calls: accounts.iter().flat_map(|a| a.calls.0.values()).sum(),
        errors: accounts.iter().map(|a| a.errors.0.len()).sum(),
    };
    Ok(Json(ScanRunView {
        run_id: run.run_id.into(),
        scope: run.scope,
        scope_id: run.scope_id,
        path_prefix: run.path_prefix,
        trigger: run.trigger,
        status: run.status,
        progress,
        accounts: accounts.into_iter().map(RunAccountView::from).collect(),
        started_at: run.started_at,
        finished_at: run.finished_at,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InventoryItem {
    pub service: String,
    pub region: String,
    /// What it is: detector, feature:S3_DATA_EVENTS, hub, control:IAM.1, recorder,
    /// rule:CLOUD_TRAIL_ENABLED, cis:root-usage, event:ConsoleLogin, trail, ...
    pub kind: String,
    pub resource_id: String,
    pub enabled: bool,
    #[schema(value_type = Object)]
    pub detail: Value,
    pub first_seen_at: DateTime<Utc>,
    pub last_changed_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LastScan {
    pub run_id: Uuid,
    pub status: String,
    pub finished_at: Option<DateTime<Utc>>,
    pub errors: Vec<ScanErrorView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InventoryView {
    pub account_id: String,
    /// The regions the last scan covered.
    pub regions: Vec<String>,
    pub last_scan: Option<LastScan>,
    /// When the inventory last changed.
    pub last_changed_at: Option<DateTime<Utc>>,
    pub items: Vec<InventoryItem>,
    /// Services (or features) off in some regions in scope.
    #[schema(value_type = Vec<Object>)]
    pub gaps: Value,
}

/// An account's inventory: what its scans found per service and region, its
/// gaps, and its last scan (members).
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/cloud-accounts/{account_id}/inventory", tag = "scans",
    params(("tenant_id" = Uuid, Path), ("account_id" = String, Path)), security(("api_key" = [])),
    responses((status = 200, body = InventoryView), (status = 404, body = crate::error::Problem)))]
pub async fn get_inventory(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    ApiPath((tenant_id, account_id)): ApiPath<(TenantId, String)>,
) -> ApiResult<Json<InventoryView>> {
    principal.in_tenant(tenant_id, &state, &headers).await?;
    let account_id = AwsAccountId::parse(&account_id)?;
    let account = account_id.as_str();
    // Another tenant's account, or none: 404.
    let _known = account_view(&state, tenant_id, account).await?;
    let header = inventory::account(&state.pool, tenant_id, account).await?;
    let items = inventory::observations(&state.pool, tenant_id, account).await?;
    let last_scan = state
        .scans
        .last_scan(tenant_id, account)
        .await?
        .map(|(run_id, row)| LastScan {
            run_id: run_id.into(),
            errors: row.errors.0.into_iter().map(|e| error_view(account, e)).collect(),
            status: row.status,
            finished_at: row.finished_at,
        });
    let gaps = coverage::scan_evaluation(&state.pool, tenant_id, account)
        .await?
        .map(|evaluation| evaluation["gaps"].clone())
        .unwrap_or(Value::Array(vec![]));
    Ok(Json(InventoryView {
        account_id: account.to_owned(),
        regions: header.as_ref().map(|h| h.regions.clone()).unwrap_or_default(),
        last_changed_at: header.map(|h| h.last_changed_at),
        last_scan,
        items: items
            .into_iter()
            .map(|row| InventoryItem {
                service: row.service,
                region: row.region,
                kind: row.kind,
                resource_id: row.resource_id,
                enabled: row.enabled,
                detail: row.detail.0,
                first_seen_at: row.first_seen_at,
                last_changed_at: row.last_changed_at,
            })
            .collect(),
        gaps,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScanRegions {
    /// AWS regions such as `us-east-1`; null scans every enabled region.
    pub regions: Option<Vec<String>>,
}

/// Known regions, every bad one named.
fn parse_regions(regions: Option<Vec<String>>) -> ApiResult<Option<BTreeSet<Region>>> {
    let Some(regions) = regions else { return Ok(None) };
    let mut fields = Fields::default();
    if regions.is_empty() {
        fields.check::<(), _>(
            "regions",
            Err("name at least one region, or null for every enabled region"),
        );
    }
    if regions.len() > 64 {
        fields.check::<(), _>("regions", Err("at most 64 regions"));
    }
    let parsed: BTreeSet<Region> = regions
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            fields.check(
                &format!("regions[{i}]"),
                known_region(r.trim()).ok_or("is not an AWS region Coverwatch knows"),
            )
        })
        .collect();
    fields.finish()?;
    Ok(Some(parsed))
}

/// Where scans of a connected account look (owner or admin): the account's
/// own narrowing wins over its organization's.
#[utoipa::path(put, path = "/v1/tenants/{tenant_id}/cloud-accounts/{account_id}/scan-regions", tag = "scans",
    params(("tenant_id" = Uuid, Path), ("account_id" = String, Path)), request_body = ScanRegions,
    security(("api_key" = [])),
    responses((status = 200, body = CloudAccountView), (status = 404, body = crate::error::Problem),
              (status = 422, body = crate::error::Problem)))]
pub async fn set_account_regions(
    State(state): State<AppState>,
    principal: Principal,
    info: RequestInfo,
    headers: HeaderMap,
    ApiPath((tenant_id, account_id)): ApiPath<(TenantId, String)>,
    ApiJson(body): ApiJson<ScanRegions>,
) -> ApiResult<Json<CloudAccountView>> {
    let member = principal.in_tenant(tenant_id, &state, &headers).await?;
    member.require(Role::can_administer, "only an owner or admin sets where scans look")?;
    let account_id = AwsAccountId::parse(&account_id)?;
    let regions = parse_regions(body.regions)?;
    let committed = state
        .cloud_accounts
        .set_scan_regions(tenant_id, account_id.clone(), regions, &member.metadata(&info))
        .await?;
    state
        .settle_or_accepted(committed, account_location(tenant_id, account_id.as_str()))
        .await?;
    account_view(&state, tenant_id, account_id.as_str()).await
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OrganizationScanRegions {
    pub organization_id: Uuid,
    pub scan_regions: Option<Vec<String>>,
}

/// Where scans of an organization's members look, unless an account says
/// otherwise (owner or admin).
#[utoipa::path(put, path = "/v1/tenants/{tenant_id}/cloud-organizations/{org_id}/scan-regions", tag = "scans",
    params(("tenant_id" = Uuid, Path), ("org_id" = Uuid, Path)), request_body = ScanRegions,
    security(("api_key" = [])),
    responses((status = 200, body = OrganizationScanRegions), (status = 404, body = crate::error::Problem),
              (status = 422, body = crate::error::Problem)))]
pub async fn set_organization_regions(
    State(state): State<AppState>,
    principal: Principal,
    info: RequestInfo,
    headers: HeaderMap,
    ApiPath((tenant_id, organization_id)): ApiPath<(TenantId, OrganizationId)>,
    ApiJson(body): ApiJson<ScanRegions>,
) -> ApiResult<Json<OrganizationScanRegions>> {
    let member = principal.in_tenant(tenant_id, &state, &headers).await?;
    member.require(Role::can_administer, "only an owner or admin sets where scans look")?;
    organization_of(&state, tenant_id, organization_id).await?;
    let regions = parse_regions(body.regions)?;
    let committed = state
        .cloud_organizations
        .set_scan_regions(organization_id, regions, &member.metadata(&info))
        .await?;
    let location = format!("/v1/tenants/{tenant_id}/cloud-organizations/{organization_id}");
    state.settle_or_accepted(committed, location).await?;
    let row = organization_of(&state, tenant_id, organization_id).await?;
    Ok(Json(OrganizationScanRegions {
        organization_id: organization_id.into(),
        scan_regions: row.scan_regions,
    }))
}
