//! ATT&CK coverage queries over the coverage read models: per account (with
//! what its organization contributes), per organization or subtree (union,
//! minimum, per account, per tactic), snapshot history of accounts and
//! organizations (a page at a time), and ATT&CK Navigator
//! layers (format 4.5). The denominator is the catalog's techniques and
//! sub-techniques for a platform set (default: the cloud platforms).

use super::{Page, limit, page};
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiPath, ApiQuery};
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use chrono::{DateTime, Utc};
use coverwatch_domain::attack::{self, AttackCatalog, PlatformSet, TechniqueId, TechniqueSet};
use coverwatch_domain::cloud::values::AwsAccountId;
use coverwatch_domain::detection::coverage::{Breakdown, ratio, union_and_minimum};
use coverwatch_domain::ids::{OrganizationId, TenantId};
use coverwatch_projections::cloud::queries as cloud;
use coverwatch_projections::coverage::queries::{self, AccountCoverageRow, OrganizationRead};
use coverwatch_projections::coverage::snapshots::{self, SnapshotRow};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AccountQuery {
    /// Comma-separated ATT&CK platforms (default IaaS,SaaS,Office Suite,Identity Provider).
    pub platforms: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AccountCoverage {
    pub account_id: String,
    pub organization_id: Option<Uuid>,
    pub total_coverage: f64,
    pub covered: usize,
    pub denominator: usize,
    /// Covered only by the account's own detections.
    pub account_techniques: Vec<String>,
    /// Covered only by its organization's detections.
    pub org_techniques: Vec<String>,
    /// Covered by both.
    pub overlap_techniques: Vec<String>,
    pub attack_version: String,
    pub platforms: Vec<String>,
    /// The log position the coverage read model has reached.
    pub as_of_position: i64,
    /// Per covered technique, the detections covering it and where each
    /// comes from: `registered` (the tenant's, for the account),
    /// `organization` (the tenant's, for its organization),
    /// `organization_source` (derived from an organization-level source),
    /// `scan` (found deployed by a scan, with its service, regions, mapping
    /// source and version).
    pub techniques: Vec<TechniqueSources>,
    /// What the account's last scans found, evaluated against the regions
    /// in scope: its detections (covering or not, with missing regions) and
    /// gaps; null before the first scan.
    #[schema(value_type = Object)]
    pub scan: Option<Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TechniqueSources {
    pub technique: String,
    #[schema(value_type = Vec<Object>)]
    pub detections: Value,
}

fn platforms(input: Option<&str>) -> ApiResult<PlatformSet> {
    match input {
        None => Ok(PlatformSet::cloud()),
        Some(list) => PlatformSet::parse(list, attack::latest()).map_err(|e| ApiError::validation("platforms", e)),
    }
}

fn ids(set: &TechniqueSet) -> Vec<String> {
    attack::latest()
        .ids_of(set)
        .into_iter()
        .map(ToString::to_string)
        .collect()
}

/// One connected account's row and the position it reflects.
async fn account_row(state: &AppState, tenant_id: TenantId, account_id: &str) -> ApiResult<(AccountCoverageRow, i64)> {
    AwsAccountId::parse(account_id)?;
    queries::account(&state.pool, tenant_id, account_id)
        .await?
        .ok_or_else(|| ApiError::NotFound("connected account".into()))
}

/// One connected account's coverage: its own detections and those it
/// inherits from its organization (members).
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/coverage/accounts/{account_id}", tag = "coverage",
    params(("tenant_id" = Uuid, Path), ("account_id" = String, Path), AccountQuery), security(("api_key" = [])),
    responses((status = 200, body = AccountCoverage), (status = 404, body = crate::error::Problem)))]
pub async fn account(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    ApiPath((tenant_id, account_id)): ApiPath<(TenantId, String)>,
    ApiQuery(query): ApiQuery<AccountQuery>,
) -> ApiResult<Json<AccountCoverage>> {
    principal.in_tenant(tenant_id, &state, &headers).await?;
    let platforms = platforms(query.platforms.as_deref())?;
    let (row, as_of_position) = account_row(&state, tenant_id, &account_id).await?;
    let catalog = attack::latest();
    let breakdown = row.breakdown(&catalog.denominator_set(&platforms));
    let covered: BTreeSet<TechniqueId> = catalog.ids_of(&breakdown.covered).into_iter().cloned().collect();
    let techniques = queries::sources(&state.pool, tenant_id, &row)
        .await?
        .into_iter()
        .filter(|(technique, _)| covered.contains(technique))
        .map(|(technique, detections)| {
            Ok(TechniqueSources {
                technique: technique.to_string(),
                detections: serde_json::to_value(detections).map_err(anyhow::Error::from)?,
            })
        })
        .collect::<ApiResult<Vec<_>>>()?;
    let scan = queries::scan_evaluation(&state.pool, tenant_id, &row.account_id).await?;
    Ok(Json(AccountCoverage {
        account_id: row.account_id,
        organization_id: row.organization_id.map(Into::into),
        total_coverage: breakdown.total(),
        covered: breakdown.covered.len(),
        denominator: breakdown.denominator,
        account_techniques: ids(&breakdown.account_only),
        org_techniques: ids(&breakdown.organization_only),
        overlap_techniques: ids(&breakdown.overlap),
        attack_version: catalog.attack_version.clone(),
        platforms: platforms.names().map(str::to_owned).collect(),
        as_of_position,
        techniques,
        scan,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct OrganizationQuery {
    /// `Root/Production` limits the figures to that subtree's accounts.
    pub path_prefix: Option<String>,
    /// Comma-separated ATT&CK platforms (default the cloud platforms).
    pub platforms: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Figure {
    pub covered: usize,
    pub total_coverage: f64,
    pub techniques: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AccountLine {
    pub account_id: String,
    pub path: Option<String>,
    pub total_coverage: f64,
    pub covered: usize,
    pub account_techniques: usize,
    pub org_techniques: usize,
    pub overlap_techniques: usize,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TacticLine {
    pub tactic: String,
    pub name: String,
    pub denominator: usize,
    pub union: usize,
    pub minimum: usize,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OrganizationCoverage {
    pub organization_id: Uuid,
    pub path_prefix: Option<String>,
    /// Covered in any of the accounts.
    pub union: Figure,
    /// Covered in every account.
    pub minimum: Figure,
    pub denominator: usize,
    pub accounts: Vec<AccountLine>,
    /// Enabled organization-scoped detections.
    pub org_detection_count: i64,
    /// Techniques the organization's detections cover in these accounts.
    pub org_covered_techniques: Vec<String>,
    pub by_tactic: Vec<TacticLine>,
    pub attack_version: String,
    pub platforms: Vec<String>,
    pub as_of_position: i64,
    /// Per scanned account with gaps, the services (or features) off in
    /// some of its regions in scope ("GuardDuty off in eu-west-3").
    pub scan_gaps: Vec<AccountGaps>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AccountGaps {
    pub account_id: String,
    #[schema(value_type = Vec<Object>)]
    pub gaps: Value,
}

/// 404 unless the organization is the tenant's.
async fn read_organization(
    state: &AppState,
    tenant_id: TenantId,
    org_id: OrganizationId,
    path_prefix: Option<&str>,
) -> ApiResult<OrganizationRead> {
    queries::organization(&state.pool, tenant_id, org_id, path_prefix)
        .await?
        .ok_or_else(|| ApiError::NotFound("cloud organization".into()))
}

fn figure(set: &TechniqueSet, denominator: usize) -> Figure {
    Figure {
        covered: set.len(),
        total_coverage: ratio(set.len(), denominator),
        techniques: ids(set),
    }
}

fn by_tactic(
    catalog: &AttackCatalog,
    denominator: &TechniqueSet,
    union: &TechniqueSet,
    minimum: &TechniqueSet,
) -> Vec<TacticLine> {
    catalog
        .tactics
        .iter()
        .map(|tactic| {
            let within = catalog.tactic_set(&tactic.shortname).intersection(denominator);
            TacticLine {
                tactic: tactic.shortname.clone(),
                name: tactic.name.clone(),
                denominator: within.len(),
                union: within.intersection(union).len(),
                minimum: within.intersection(minimum).len(),
            }
        })
        .collect()
}

/// Coverage of an organization's connected accounts, or of a subtree's
/// (members): union, minimum, per account and per tactic.
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/coverage/organizations/{org_id}", tag = "coverage",
    params(("tenant_id" = Uuid, Path), ("org_id" = Uuid, Path), OrganizationQuery), security(("api_key" = [])),
    responses((status = 200, body = OrganizationCoverage), (status = 404, body = crate::error::Problem)))]
pub async fn organization(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    ApiPath((tenant_id, org_id)): ApiPath<(TenantId, OrganizationId)>,
    ApiQuery(query): ApiQuery<OrganizationQuery>,
) -> ApiResult<Json<OrganizationCoverage>> {
    principal.in_tenant(tenant_id, &state, &headers).await?;
    let platforms = platforms(query.platforms.as_deref())?;
    let prefix = query.path_prefix.map(|p| p.trim_end_matches('/').to_owned());
    let OrganizationRead {
        rows,
        as_of_position,
        org_detection_count,
    } = read_organization(&state, tenant_id, org_id, prefix.as_deref()).await?;
    let catalog = attack::latest();
    let denominator = catalog.denominator_set(&platforms);
    let breakdowns: Vec<Breakdown> = rows.iter().map(|r| r.breakdown(&denominator)).collect();
    let (union, minimum) = union_and_minimum(breakdowns.iter().map(|b| &b.covered));
    let mut org_covered = TechniqueSet::default();
    for b in &breakdowns {
        org_covered = org_covered.union(&b.organization_only).union(&b.overlap);
    }
    let accounts = rows
        .iter()
        .zip(&breakdowns)
        .map(|(row, b)| AccountLine {
            account_id: row.account_id.clone(),
            path: row.path.clone(),
            total_coverage: b.total(),
            covered: b.covered.len(),
            account_techniques: b.account_only.len(),
            org_techniques: b.organization_only.len(),
            overlap_techniques: b.overlap.len(),
        })
        .collect();
    let scanned: Vec<&str> = rows.iter().map(|r| r.account_id.as_str()).collect();
    let scan_gaps = queries::scan_evaluations(&state.pool, tenant_id, &scanned)
        .await?
        .into_iter()
        .filter(|(_, evaluation)| evaluation["gaps"].as_array().is_some_and(|g| !g.is_empty()))
        .map(|(account_id, evaluation)| AccountGaps {
            account_id,
            gaps: evaluation["gaps"].clone(),
        })
        .collect();
    Ok(Json(OrganizationCoverage {
        organization_id: org_id.into(),
        path_prefix: prefix,
        by_tactic: by_tactic(catalog, &denominator, &union, &minimum),
        union: figure(&union, denominator.len()),
        minimum: figure(&minimum, denominator.len()),
        denominator: denominator.len(),
        accounts,
        org_detection_count,
        org_covered_techniques: ids(&org_covered),
        attack_version: catalog.attack_version.clone(),
        platforms: platforms.names().map(str::to_owned).collect(),
        as_of_position,
        scan_gaps,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct SnapshotQuery {
    /// RFC 3339; default 30 days before `to`.
    pub from: Option<DateTime<Utc>>,
    /// RFC 3339; default: no end.
    pub to: Option<DateTime<Utc>>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Page size, 1 to 500 (default 50).
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Snapshot {
    pub taken_at: DateTime<Utc>,
    /// change (a figure moved) or daily.
    pub kind: String,
    pub position: i64,
    pub attack_version: String,
    #[schema(value_type = Object)]
    pub figures: Value,
}

impl From<SnapshotRow> for Snapshot {
    fn from(row: SnapshotRow) -> Self {
        Self {
            taken_at: row.taken_at,
            kind: row.kind,
            position: row.position,
            attack_version: row.attack_version,
            figures: row.figures,
        }
    }
}

/// Where a page of snapshots ended: (taken_at in µs, position, kind).
fn snapshot_cursor(snapshot: &SnapshotRow) -> String {
    format!(
        "{}.{}.{}",
        snapshot.taken_at.timestamp_micros(),
        snapshot.position,
        snapshot.kind
    )
}

fn parse_snapshot_cursor(cursor: &str) -> ApiResult<(DateTime<Utc>, i64, String)> {
    let invalid = || ApiError::validation("cursor", "is not a cursor this API returned");
    let mut parts = cursor.splitn(3, '.');
    let micros: i64 = parts.next().and_then(|p| p.parse().ok()).ok_or_else(invalid)?;
    let position: i64 = parts.next().and_then(|p| p.parse().ok()).ok_or_else(invalid)?;
    let kind = parts
        .next()
        .filter(|k| ["change", "daily"].contains(k))
        .ok_or_else(invalid)?;
    let taken_at = DateTime::from_timestamp_micros(micros).ok_or_else(invalid)?;
    Ok((taken_at, position, kind.to_owned()))
}

/// One account's or organization's snapshots in a time range, oldest first,
/// a page at a time (`scope_id` is already known to be the tenant's).
async fn snapshot_page(
    state: &AppState,
    tenant_id: TenantId,
    scope: &str,
    scope_id: &str,
    query: SnapshotQuery,
) -> ApiResult<Page<Snapshot>> {
    let from = query
        .from
        .unwrap_or_else(|| query.to.unwrap_or_else(|| state.clock.now()) - chrono::Duration::days(30));
    if query.to.is_some_and(|to| from > to) {
        return Err(ApiError::validation("from", "must not be after to"));
    }
    let limit = limit(query.limit)?;
    let after = query.cursor.as_deref().map(parse_snapshot_cursor).transpose()?;
    let rows = snapshots::page(
        &state.pool,
        tenant_id,
        scope,
        scope_id,
        from,
        query.to,
        after,
        limit + 1,
    )
    .await?;
    let (rows, next_cursor) = page(rows, limit, snapshot_cursor);
    Ok(Page {
        items: rows.into_iter().map(Snapshot::from).collect(),
        next_cursor,
    })
}

/// The organization's coverage snapshots in a time range, oldest first, a
/// page at a time (members). History older than the tier's retention is
/// pruned.
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/coverage/organizations/{org_id}/snapshots", tag = "coverage",
    params(("tenant_id" = Uuid, Path), ("org_id" = Uuid, Path), SnapshotQuery), security(("api_key" = [])),
    responses((status = 200, body = Page<Snapshot>), (status = 404, body = crate::error::Problem)))]
pub async fn snapshots(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    ApiPath((tenant_id, org_id)): ApiPath<(TenantId, OrganizationId)>,
    ApiQuery(query): ApiQuery<SnapshotQuery>,
) -> ApiResult<Json<Page<Snapshot>>> {
    principal.in_tenant(tenant_id, &state, &headers).await?;
    super::cloud_organizations::organization_of(&state, tenant_id, org_id).await?;
    let page = snapshot_page(&state, tenant_id, "organization", &org_id.to_string(), query).await?;
    Ok(Json(page))
}

/// One account's coverage snapshots in a time range, oldest first, a page at
/// a time (members): also for an account no longer connected, whose history
/// stays until the tier's retention prunes it.
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/coverage/accounts/{account_id}/snapshots", tag = "coverage",
    params(("tenant_id" = Uuid, Path), ("account_id" = String, Path), SnapshotQuery), security(("api_key" = [])),
    responses((status = 200, body = Page<Snapshot>), (status = 404, body = crate::error::Problem)))]
pub async fn account_snapshots(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    ApiPath((tenant_id, account_id)): ApiPath<(TenantId, String)>,
    ApiQuery(query): ApiQuery<SnapshotQuery>,
) -> ApiResult<Json<Page<Snapshot>>> {
    principal.in_tenant(tenant_id, &state, &headers).await?;
    let account_id = AwsAccountId::parse(&account_id)?;
    if !cloud::is_known(&state.pool, tenant_id, account_id.as_str()).await? {
        return Err(ApiError::NotFound("cloud account".into()));
    }
    let page = snapshot_page(&state, tenant_id, "account", account_id.as_str(), query).await?;
    Ok(Json(page))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct LayerQuery {
    /// union (default) or minimum.
    pub view: Option<String>,
    pub path_prefix: Option<String>,
    pub platforms: Option<String>,
}

/// An ATT&CK Navigator layer (format 4.5) with one entry per covered technique.
fn layer(
    name: String,
    description: String,
    platforms: &PlatformSet,
    entries: Vec<(TechniqueId, u32, String)>,
) -> Value {
    let catalog = attack::latest();
    let major = catalog.attack_version.split('.').next().unwrap_or("18").to_owned();
    let techniques: Vec<Value> = entries
        .into_iter()
        .map(|(id, score, comment)| {
            json!({
                "techniqueID": id.as_str(), "score": score, "color": "", "comment": comment, "enabled": true,
                "metadata": [], "links": [], "showSubtechniques": false,
            })
        })
        .collect();
    json!({
        "name": name,
        "versions": {"attack": major, "navigator": "5.1.0", "layer": "4.5"},
        "domain": "enterprise-attack",
        "description": description,
        "filters": {"platforms": platforms.names().collect::<Vec<_>>()},
        "sorting": 0,
        "layout": {"layout": "side", "aggregateFunction": "average", "showID": true, "showName": true,
                   "showAggregateScores": false, "countUnscored": false, "expandedSubtechniques": "annotated"},
        "hideDisabled": false,
        "techniques": techniques,
        "gradient": {"colors": ["#ffe766ff", "#8ec843ff"], "minValue": 60, "maxValue": 100},
        "legendItems": [
            {"label": "covered (confidence 0.6)", "color": "#ffe766ff"},
            {"label": "covered (confidence 1.0, or every account)", "color": "#8ec843ff"},
        ],
        "metadata": [{"name": "generated by", "value": "Coverwatch"}, {"name": "ATT&CK version", "value": catalog.attack_version}],
        "links": [],
        "showTacticRowBackground": false,
        "tacticRowBackground": "#dddddd",
        "selectTechniquesAcrossTactics": true,
        "selectSubtechniquesWithParent": false,
        "selectVisibleTechniques": false,
    })
}

fn comment(names: &BTreeSet<String>) -> String {
    let listed: Vec<&str> = names.iter().take(20).map(String::as_str).collect();
    let more = names.len().saturating_sub(listed.len());
    let mut text = format!("covered by: {}", listed.join("; "));
    if more > 0 {
        text.push_str(&format!(" and {more} more"));
    }
    text
}

/// The account's coverage as an ATT&CK Navigator layer (members).
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/coverage/accounts/{account_id}/navigator-layer", tag = "coverage",
    params(("tenant_id" = Uuid, Path), ("account_id" = String, Path), AccountQuery), security(("api_key" = [])),
    responses((status = 200, body = Object)))]
pub async fn account_layer(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    ApiPath((tenant_id, account_id)): ApiPath<(TenantId, String)>,
    ApiQuery(query): ApiQuery<AccountQuery>,
) -> ApiResult<Json<Value>> {
    principal.in_tenant(tenant_id, &state, &headers).await?;
    let platforms = platforms(query.platforms.as_deref())?;
    let (row, _) = account_row(&state, tenant_id, &account_id).await?;
    let catalog = attack::latest();
    let breakdown = row.breakdown(&catalog.denominator_set(&platforms));
    let covering = queries::covering(&state.pool, tenant_id, std::slice::from_ref(&row)).await?;
    let entries = catalog
        .ids_of(&breakdown.covered)
        .into_iter()
        .map(|t| {
            let (best, names) = covering.get(t).cloned().unwrap_or_default();
            (t.clone(), (best * 100.0).round() as u32, comment(&names))
        })
        .collect();
    Ok(Json(layer(
        format!("Coverwatch: account {account_id}"),
        format!(
            "Techniques covered (confidence ≥ 0.6) in account {account_id}: {} of {}; score = best confidence × 100",
            breakdown.covered.len(),
            breakdown.denominator
        ),
        &platforms,
        entries,
    )))
}

/// The organization's union or minimum coverage as an ATT&CK Navigator layer (members).
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/coverage/organizations/{org_id}/navigator-layer", tag = "coverage",
    params(("tenant_id" = Uuid, Path), ("org_id" = Uuid, Path), LayerQuery), security(("api_key" = [])),
    responses((status = 200, body = Object)))]
pub async fn organization_layer(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    ApiPath((tenant_id, org_id)): ApiPath<(TenantId, OrganizationId)>,
    ApiQuery(query): ApiQuery<LayerQuery>,
) -> ApiResult<Json<Value>> {
    principal.in_tenant(tenant_id, &state, &headers).await?;
    let platforms = platforms(query.platforms.as_deref())?;
    let minimum_view = match query.view.as_deref() {
        None | Some("union") => false,
        Some("minimum") => true,
        Some(_) => return Err(ApiError::validation("view", "must be union or minimum")),
    };
    let prefix = query.path_prefix.map(|p| p.trim_end_matches('/').to_owned());
    let rows = read_organization(&state, tenant_id, org_id, prefix.as_deref())
        .await?
        .rows;
    let catalog = attack::latest();
    let denominator = catalog.denominator_set(&platforms);
    let breakdowns: Vec<Breakdown> = rows.iter().map(|r| r.breakdown(&denominator)).collect();
    let (union, minimum) = union_and_minimum(breakdowns.iter().map(|b| &b.covered));
    let covering = queries::covering(&state.pool, tenant_id, &rows).await?;
    let shown = if minimum_view { &minimum } else { &union };
    let entries = shown
        .iter()
        .filter_map(|i| catalog.id_at(i).map(|t| (i, t.clone())))
        .map(|(i, t)| {
            let in_accounts = breakdowns.iter().filter(|b| b.covered.contains(i)).count();
            // Union: the share of accounts covering it; minimum: all do.
            let score = (100 * in_accounts).checked_div(rows.len()).unwrap_or(0) as u32;
            let (_, names) = covering.get(&t).cloned().unwrap_or_default();
            (
                t,
                score,
                format!("{} of {} accounts; {}", in_accounts, rows.len(), comment(&names)),
            )
        })
        .collect();
    let view = if minimum_view { "minimum" } else { "union" };
    Ok(Json(layer(
        format!("Coverwatch: organization {org_id} ({view})"),
        format!(
            "{view} coverage over {} connected accounts{}: {} of {} techniques; score = % of accounts covering it",
            rows.len(),
            prefix.as_deref().map(|p| format!(" under {p}")).unwrap_or_default(),
            shown.len(),
            denominator.len()
        ),
        &platforms,
        entries,
    )))
}
