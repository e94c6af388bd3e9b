//! How the coverage read models are read: an account's technique sets, an
//! organization's (or subtree's) accounts with the position they reflect,
//! which detections cover what (for Navigator layers), and detections as
//! the `detections` table holds them.

use coverwatch_domain::attack::{TechniqueId, TechniqueSet};
use coverwatch_domain::detection::coverage::{Applies, Breakdown, applies, covered};
use coverwatch_domain::detection::{DetectionScope, DetectionStatus, Techniques};
use coverwatch_domain::ids::{DetectionId, OrganizationId, TenantId};
use sqlx::PgPool;
use sqlx::types::Json;
use std::collections::{BTreeMap, BTreeSet};

/// One connected account's coverage: its own and inherited technique sets
/// (bitsets over the newest catalog) and its path in its organization.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AccountCoverageRow {
    pub account_id: String,
    pub organization_id: Option<OrganizationId>,
    pub own: Vec<u8>,
    pub inherited: Vec<u8>,
    pub path: Option<String>,
}

impl AccountCoverageRow {
    /// The account's figures over a denominator.
    pub fn breakdown(&self, denominator: &TechniqueSet) -> Breakdown {
        Breakdown::of(
            &TechniqueSet::from_bytes(&self.own),
            &TechniqueSet::from_bytes(&self.inherited),
            denominator,
        )
    }
}

/// The checkpoint of the coverage read model, as a scalar subquery: read in
/// the same statement as the figures, it is exactly the position they show.
const AS_OF: &str = "(SELECT position FROM subscriber_checkpoints WHERE name = 'coverage')";

/// One connected account of the tenant and the position it reflects.
pub async fn account(
    pool: &PgPool,
    tenant_id: TenantId,
    account_id: &str,
) -> sqlx::Result<Option<(AccountCoverageRow, i64)>> {
    #[derive(sqlx::FromRow)]
    struct Read {
        #[sqlx(flatten)]
        row: AccountCoverageRow,
        as_of: Option<i64>,
    }
    let read: Option<Read> = sqlx::query_as(&format!(
        "SELECT c.account_id, c.organization_id, c.own, c.inherited, m.path, {AS_OF} AS as_of
           FROM coverage_accounts c
           LEFT JOIN coverage_members m ON m.organization_id = c.organization_id AND m.account_id = c.account_id
          WHERE c.tenant_id = $1 AND c.account_id = $2"
    ))
    .bind(tenant_id)
    .bind(account_id)
    .fetch_optional(pool)
    .await?;
    Ok(read.map(|r| (r.row, r.as_of.unwrap_or(0))))
}

/// An organization's (or subtree's) connected accounts, with the position
/// they reflect and the organization's enabled detections, all from one
/// statement (one snapshot).
#[derive(Debug, Clone)]
pub struct OrganizationRead {
    pub rows: Vec<AccountCoverageRow>,
    pub as_of_position: i64,
    pub org_detection_count: i64,
}

/// `None` unless the organization is the tenant's: a row of the tenant's
/// accounts in it proves that; with none, the organization is read.
pub async fn organization(
    pool: &PgPool,
    tenant_id: TenantId,
    organization_id: OrganizationId,
    path_prefix: Option<&str>,
) -> sqlx::Result<Option<OrganizationRead>> {
    const DETECTIONS: &str = "(SELECT count(*) FROM detections
                                WHERE organization_id = $2 AND scope_type = 'organization' AND status = 'enabled')";
    #[derive(sqlx::FromRow)]
    struct Read {
        #[sqlx(flatten)]
        row: AccountCoverageRow,
        as_of: Option<i64>,
        org_detections: i64,
    }
    let read: Vec<Read> = sqlx::query_as(&format!(
        "SELECT c.account_id, c.organization_id, c.own, c.inherited, m.path,
                {AS_OF} AS as_of, {DETECTIONS} AS org_detections
           FROM coverage_accounts c
           LEFT JOIN coverage_members m ON m.organization_id = c.organization_id AND m.account_id = c.account_id
          WHERE c.tenant_id = $1 AND c.organization_id = $2
            AND ($3::text IS NULL OR m.path = $3 OR starts_with(m.path, $3 || '/'))
          ORDER BY c.account_id"
    ))
    .bind(tenant_id)
    .bind(organization_id)
    .bind(path_prefix)
    .fetch_all(pool)
    .await?;
    if let Some(first) = read.first() {
        let (as_of_position, org_detection_count) = (first.as_of.unwrap_or(0), first.org_detections);
        return Ok(Some(OrganizationRead {
            rows: read.into_iter().map(|r| r.row).collect(),
            as_of_position,
            org_detection_count,
        }));
    }
    // No account to show: the organization itself proves it is the tenant's.
    let found: Option<(Option<i64>, i64)> = sqlx::query_as(&format!(
        "SELECT {AS_OF}, {DETECTIONS} FROM cloud_organizations WHERE tenant_id = $1 AND id = $2"
    ))
    .bind(tenant_id)
    .bind(organization_id)
    .fetch_optional(pool)
    .await?;
    Ok(found.map(|(as_of, org_detection_count)| OrganizationRead {
        rows: vec![],
        as_of_position: as_of.unwrap_or(0),
        org_detection_count,
    }))
}

/// Per technique the enabled detections covering it (≥ 0.6) in any of
/// `rows`: the best confidence and the detections' names.
pub async fn covering(
    pool: &PgPool,
    tenant_id: TenantId,
    rows: &[AccountCoverageRow],
) -> sqlx::Result<BTreeMap<TechniqueId, (f64, BTreeSet<String>)>> {
    let accounts: Vec<&str> = rows.iter().map(|r| r.account_id.as_str()).collect();
    let organizations: Vec<OrganizationId> = rows
        .iter()
        .filter_map(|r| r.organization_id)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let detections: Vec<(String, Json<Techniques>, Json<DetectionScope>)> = sqlx::query_as(
        "SELECT name, techniques, scope FROM detections
          WHERE tenant_id = $1 AND status = 'enabled'
            AND ((scope_type = 'account' AND account_id = ANY($2)) OR (scope_type = 'organization' AND organization_id = ANY($3)))",
    )
    .bind(tenant_id)
    .bind(&accounts)
    .bind(&organizations)
    .fetch_all(pool)
    .await?;
    let mut out: BTreeMap<TechniqueId, (f64, BTreeSet<String>)> = BTreeMap::new();
    for (name, techniques, scope) in detections {
        let reaches = rows
            .iter()
            .any(|r| applies(&scope, &r.account_id, r.organization_id) != Applies::No);
        if !reaches {
            continue;
        }
        for technique in covered(DetectionStatus::Enabled, &techniques) {
            let entry = out.entry(technique.clone()).or_insert((0.0, BTreeSet::new()));
            entry.0 = entry.0.max(techniques[technique].value());
            entry.1.insert(name.clone());
        }
    }
    Ok(out)
}

/// A detection as the `detections` table holds it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DetectionRow {
    pub detection_id: DetectionId,
    pub name: String,
    pub source: String,
    pub techniques: Json<Techniques>,
    pub scope: Json<DetectionScope>,
    /// enabled, disabled or retired.
    pub status: String,
    pub attack_version: String,
    pub derived_source_id: Option<String>,
    pub mapping_version: Option<String>,
    pub registered_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
    pub version: i64,
}

const DETECTION_COLUMNS: &str = "detection_id, name, source, techniques, scope, status, attack_version, \
    derived_source_id, mapping_version, registered_at, updated_at, version";

pub async fn detection(
    pool: &PgPool,
    tenant_id: TenantId,
    detection_id: DetectionId,
) -> sqlx::Result<Option<DetectionRow>> {
    sqlx::query_as(&format!(
        "SELECT {DETECTION_COLUMNS} FROM detections WHERE detection_id = $1 AND tenant_id = $2"
    ))
    .bind(detection_id)
    .bind(tenant_id)
    .fetch_optional(pool)
    .await
}

/// What a page of detections is filtered by (each `None` is no filter).
#[derive(Debug, Clone, Default)]
pub struct DetectionFilter {
    pub status: Option<String>,
    pub source: Option<String>,
    /// Account-scoped detections of this account.
    pub account_id: Option<String>,
    /// Organization-scoped detections of this organization.
    pub organization_id: Option<OrganizationId>,
    /// Detections listing this technique.
    pub technique: Option<String>,
}

/// The tenant's detections by id (time-ordered), after `after`.
pub async fn detections_page(
    pool: &PgPool,
    tenant_id: TenantId,
    filter: &DetectionFilter,
    after: Option<DetectionId>,
    limit: i64,
) -> sqlx::Result<Vec<DetectionRow>> {
    sqlx::query_as(&format!(
        "SELECT {DETECTION_COLUMNS} FROM detections
          WHERE tenant_id = $1 AND ($2::text IS NULL OR status = $2) AND ($3::text IS NULL OR source = $3)
            AND ($4::text IS NULL OR account_id = $4) AND ($5::uuid IS NULL OR organization_id = $5)
            AND ($6::text IS NULL OR techniques ? $6) AND ($7::uuid IS NULL OR detection_id > $7)
          ORDER BY detection_id LIMIT $8"
    ))
    .bind(tenant_id)
    .bind(&filter.status)
    .bind(&filter.source)
    .bind(&filter.account_id)
    .bind(filter.organization_id)
    .bind(&filter.technique)
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Detections in force (enabled or disabled; retired ones no longer count).
pub async fn detections_in_force(pool: &PgPool, tenant_id: TenantId) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT count(*) FROM detections WHERE tenant_id = $1 AND status <> 'retired'")
        .bind(tenant_id)
        .fetch_one(pool)
        .await
}

/// One detection covering a technique of an account, with where it comes
/// from: `registered` (the tenant's own, for the account), `organization`
/// (the tenant's, for its organization), `organization_source` (derived
/// from an organization-level source), `scan` (found deployed by a scan).
#[derive(Debug, Clone, serde::Serialize)]
pub struct TechniqueSource {
    pub kind: &'static str,
    pub name: String,
    pub confidence: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detection_id: Option<DetectionId>,
    /// The scan's service, capability and regions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capability: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub regions: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mapping_source: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mapping_version: Option<String>,
}

/// An account's latest scan evaluation (the region rule's detections and
/// gaps), if it was ever scanned.
pub async fn scan_evaluation(
    pool: &PgPool,
    tenant_id: TenantId,
    account_id: &str,
) -> sqlx::Result<Option<serde_json::Value>> {
    sqlx::query_scalar("SELECT evaluation FROM coverage_scan_accounts WHERE tenant_id = $1 AND account_id = $2")
        .bind(tenant_id)
        .bind(account_id)
        .fetch_optional(pool)
        .await
}

/// The scan evaluations of several accounts (for an organization's gaps).
pub async fn scan_evaluations(
    pool: &PgPool,
    tenant_id: TenantId,
    accounts: &[&str],
) -> sqlx::Result<Vec<(String, serde_json::Value)>> {
    sqlx::query_as(
        "SELECT account_id, evaluation FROM coverage_scan_accounts WHERE tenant_id = $1 AND account_id = ANY($2)
          ORDER BY account_id",
    )
    .bind(tenant_id)
    .bind(accounts)
    .fetch_all(pool)
    .await
}

/// Per technique, every detection covering the account (≥ 0.6) and where
/// it comes from.
pub async fn sources(
    pool: &PgPool,
    tenant_id: TenantId,
    row: &AccountCoverageRow,
) -> sqlx::Result<BTreeMap<TechniqueId, Vec<TechniqueSource>>> {
    /// A detection: id, name, techniques, scope, derived from a source.
    type Found = (DetectionId, String, Json<Techniques>, Json<DetectionScope>, bool);
    let detections: Vec<Found> = sqlx::query_as(
        "SELECT detection_id, name, techniques, scope, derived_source_id IS NOT NULL FROM detections
          WHERE tenant_id = $1 AND status = 'enabled'
            AND ((scope_type = 'account' AND account_id = $2) OR (scope_type = 'organization' AND organization_id = $3))",
    )
    .bind(tenant_id)
    .bind(&row.account_id)
    .bind(row.organization_id)
    .fetch_all(pool)
    .await?;
    let mut out: BTreeMap<TechniqueId, Vec<TechniqueSource>> = BTreeMap::new();
    // Mirrors the read model: in error, an account inherits no source-derived detection.
    let in_error: bool = sqlx::query_scalar(
        "SELECT coalesce((SELECT in_error FROM coverage_members WHERE organization_id = $1 AND account_id = $2), false)",
    )
    .bind(row.organization_id)
    .bind(&row.account_id)
    .fetch_one(pool)
    .await?;
    for (detection_id, name, techniques, scope, derived) in detections {
        if applies(&scope, &row.account_id, row.organization_id) == Applies::No || (derived && in_error) {
            continue;
        }
        let kind = match (&scope.0, derived) {
            (DetectionScope::Account { .. }, _) => "registered",
            (DetectionScope::Organization { .. }, true) => "organization_source",
            (DetectionScope::Organization { .. }, false) => "organization",
        };
        for technique in covered(DetectionStatus::Enabled, &techniques) {
            out.entry(technique.clone()).or_default().push(TechniqueSource {
                kind,
                name: name.clone(),
                confidence: techniques[technique].value(),
                detection_id: Some(detection_id),
                service: None,
                capability: None,
                regions: vec![],
                resources: vec![],
                mapping_source: None,
                mapping_version: None,
            });
        }
    }
    if let Some(evaluation) = scan_evaluation(pool, tenant_id, &row.account_id).await? {
        let detections = evaluation["detections"].as_array().cloned().unwrap_or_default();
        for detection in detections.iter().filter(|d| d["covers"] == true) {
            let strings = |key: &str| -> Vec<String> {
                detection[key]
                    .as_array()
                    .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
                    .unwrap_or_default()
            };
            let service = detection["service"].as_str().unwrap_or_default().to_owned();
            let capability = detection["kind"].as_str().unwrap_or_default().to_owned();
            for technique in detection["techniques"].as_array().into_iter().flatten() {
                let confidence = technique["confidence"].as_f64().unwrap_or(0.0);
                let Some(id) = technique["technique"].as_str().and_then(|t| TechniqueId::parse(t).ok()) else {
                    continue;
                };
                if confidence < coverwatch_domain::attack::COVERED_AT {
                    continue;
                }
                out.entry(id).or_default().push(TechniqueSource {
                    kind: "scan",
                    name: format!("{service} {capability}"),
                    confidence,
                    detection_id: None,
                    service: Some(service.clone()),
                    capability: Some(capability.clone()),
                    regions: strings("regions"),
                    resources: strings("resources"),
                    mapping_source: detection["mapping_source"].as_str().map(str::to_owned),
                    mapping_version: detection["mapping_version"].as_str().map(str::to_owned),
                });
            }
        }
    }
    Ok(out)
}
