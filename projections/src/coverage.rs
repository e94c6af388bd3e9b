//! The coverage read models: detections as their events describe them, and
//! per connected account the techniques its own and its organization's
//! detections cover. A change touches only what it affects: an account
//! detection one account, an organization detection the accounts in its
//! scope, a connection one account. Organization union/minimum are kept as
//! per-technique account counts. Whenever a figure changes, an immutable
//! snapshot is stored at the event's position and time, so a rebuild from
//! position 0 writes exactly the rows the incremental run wrote.
//!
//! The handlers are state-based (recompute the affected accounts from the
//! detections table, apply only the difference), so re-running an event
//! changes nothing.

use crate::event::StoredEvent;
use crate::runtime::Subscriber;
use anyhow::Context;
use async_trait::async_trait;
use coverwatch_domain::attack::{self, PlatformSet, TechniqueId, TechniqueSet};
use coverwatch_domain::cloud::hierarchy::path;
use coverwatch_domain::cloud::{AccountSource, CloudAccountsEvent, CloudOrganizationEvent};
use coverwatch_domain::detection::coverage::{Breakdown, covered, ratio};
use coverwatch_domain::detection::{DetectionEvent, DetectionScope, DetectionStatus, Techniques};
use serde_json::{Value, json};
use sqlx::PgConnection;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use uuid::Uuid;

pub struct Coverage;

#[async_trait]
impl Subscriber for Coverage {
    fn name(&self) -> &'static str {
        "coverage"
    }

    fn tables(&self) -> &'static [&'static str] {
        &[
            "detections",
            "coverage_members",
            "coverage_accounts",
            "coverage_org_techniques",
            "coverage_orgs",
            "coverage_snapshots",
        ]
    }

    async fn handle(&self, conn: &mut PgConnection, events: &[StoredEvent]) -> anyhow::Result<()> {
        for event in events {
            match event.aggregate_type.as_str() {
                "detection" => {
                    let decoded: DetectionEvent = serde_json::from_value(event.payload.clone())
                        .with_context(|| format!("decoding a detection event at {}", event.position))?;
                    detection(conn, event, decoded).await?;
                }
                "cloud_accounts" => {
                    let decoded: CloudAccountsEvent = serde_json::from_value(event.payload.clone())
                        .with_context(|| format!("decoding a cloud account event at {}", event.position))?;
                    connection(conn, event, decoded).await?;
                }
                "cloud_organization" => {
                    let decoded: CloudOrganizationEvent = serde_json::from_value(event.payload.clone())
                        .with_context(|| format!("decoding a cloud organization event at {}", event.position))?;
                    let organization_id: Uuid = event.aggregate_id.parse().context("organization id")?;
                    member(conn, organization_id, decoded).await?;
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// Which side of an account's coverage an event can change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sides {
    own: bool,
    inherited: bool,
}

impl Sides {
    const BOTH: Sides = Sides {
        own: true,
        inherited: true,
    };

    fn of(scope: &DetectionScope) -> Self {
        Sides {
            own: !scope.is_organization(),
            inherited: scope.is_organization(),
        }
    }

    fn and(self, other: Sides) -> Self {
        Sides {
            own: self.own || other.own,
            inherited: self.inherited || other.inherited,
        }
    }
}

async fn detection(conn: &mut PgConnection, event: &StoredEvent, decoded: DetectionEvent) -> anyhow::Result<()> {
    use DetectionEvent as E;
    let detection_id: Uuid = event.aggregate_id.parse().context("detection id")?;
    let (tenant_id, scopes) = match decoded {
        E::DetectionRegistered {
            detection_id,
            tenant_id,
            name,
            source,
            techniques,
            scope,
            attack_version,
            derived_from,
        } => {
            let (scope_type, account_id, organization_id, subset) = scope_columns(&scope);
            sqlx::query(
                "INSERT INTO detections (detection_id, tenant_id, name, source, techniques, scope, scope_type,
                        account_id, organization_id, subset, status, attack_version, derived_source_id,
                        mapping_version, registered_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'enabled', $11, $12, $13, $14, $14)
                 ON CONFLICT (detection_id) DO NOTHING",
            )
            .bind(detection_id)
            .bind(tenant_id)
            .bind(name.as_str())
            .bind(source.as_str())
            .bind(sqlx::types::Json(&techniques))
            .bind(sqlx::types::Json(&scope))
            .bind(scope_type)
            .bind(account_id)
            .bind(organization_id)
            .bind(subset)
            .bind(attack_version)
            .bind(derived_from.as_ref().map(|d| d.source_id.clone()))
            .bind(derived_from.as_ref().map(|d| d.mapping_version.clone()))
            .bind(event.recorded_at)
            .execute(&mut *conn)
            .await?;
            (tenant_id, vec![scope])
        }
        other => {
            let row: Option<(Uuid, sqlx::types::Json<DetectionScope>)> =
                sqlx::query_as("SELECT tenant_id, scope FROM detections WHERE detection_id = $1")
                    .bind(detection_id)
                    .fetch_optional(&mut *conn)
                    .await?;
            let Some((tenant_id, sqlx::types::Json(scope))) = row else {
                anyhow::bail!("{} at {} for an unknown detection", event.event_type, event.position);
            };
            let mut scopes = vec![scope];
            match other {
                E::DetectionRegistered { .. } => unreachable!("handled above"),
                E::DetectionUpdated { name, techniques } => {
                    sqlx::query(
                        "UPDATE detections SET name = $2, techniques = $3, updated_at = $4 WHERE detection_id = $1",
                    )
                    .bind(detection_id)
                    .bind(name.as_str())
                    .bind(sqlx::types::Json(&techniques))
                    .bind(event.recorded_at)
                    .execute(&mut *conn)
                    .await?;
                }
                E::DetectionScopeChanged { to, .. } => {
                    let (scope_type, account_id, organization_id, subset) = scope_columns(&to);
                    sqlx::query(
                        "UPDATE detections SET scope = $2, scope_type = $3, account_id = $4, organization_id = $5,
                                subset = $6, updated_at = $7
                          WHERE detection_id = $1",
                    )
                    .bind(detection_id)
                    .bind(sqlx::types::Json(&to))
                    .bind(scope_type)
                    .bind(account_id)
                    .bind(organization_id)
                    .bind(subset)
                    .bind(event.recorded_at)
                    .execute(&mut *conn)
                    .await?;
                    scopes.push(to);
                }
                E::DetectionDisabled | E::DetectionEnabled | E::DetectionRetired => {
                    let status = match other {
                        E::DetectionDisabled => DetectionStatus::Disabled,
                        E::DetectionEnabled => DetectionStatus::Enabled,
                        _ => DetectionStatus::Retired,
                    };
                    sqlx::query("UPDATE detections SET status = $2, updated_at = $3 WHERE detection_id = $1")
                        .bind(detection_id)
                        .bind(status.as_str())
                        .bind(event.recorded_at)
                        .execute(&mut *conn)
                        .await?;
                }
            }
            (tenant_id, scopes)
        }
    };
    let mut accounts = BTreeSet::new();
    let mut sides = Sides {
        own: false,
        inherited: false,
    };
    for scope in &scopes {
        accounts.extend(accounts_in(conn, tenant_id, scope).await?);
        sides = sides.and(Sides::of(scope));
    }
    refresh(conn, event, tenant_id, accounts.into_iter().collect(), sides).await
}

fn scope_columns(scope: &DetectionScope) -> (&'static str, Option<String>, Option<Uuid>, Option<Vec<String>>) {
    match scope {
        DetectionScope::Account { account_id } => ("account", Some(account_id.as_str().to_owned()), None, None),
        DetectionScope::Organization {
            organization_id,
            accounts,
        } => (
            "organization",
            None,
            Some(*organization_id),
            accounts
                .as_ref()
                .map(|set| set.iter().map(|a| a.as_str().to_owned()).collect()),
        ),
    }
}

/// The connected accounts a scope reaches.
async fn accounts_in(conn: &mut PgConnection, tenant_id: Uuid, scope: &DetectionScope) -> anyhow::Result<Vec<String>> {
    let (account, organization, subset) = match scope {
        DetectionScope::Account { account_id } => (Some(account_id.as_str().to_owned()), None, None),
        DetectionScope::Organization {
            organization_id,
            accounts,
        } => (
            None,
            Some(*organization_id),
            accounts
                .as_ref()
                .map(|set| set.iter().map(|a| a.as_str().to_owned()).collect::<Vec<_>>()),
        ),
    };
    Ok(sqlx::query_scalar(
        "SELECT account_id FROM coverage_accounts
          WHERE tenant_id = $1
            AND (($2::text IS NOT NULL AND account_id = $2)
                 OR ($3::uuid IS NOT NULL AND organization_id = $3 AND ($4::text[] IS NULL OR account_id = ANY($4))))",
    )
    .bind(tenant_id)
    .bind(account)
    .bind(organization)
    .bind(subset)
    .fetch_all(&mut *conn)
    .await?)
}

async fn connection(conn: &mut PgConnection, event: &StoredEvent, decoded: CloudAccountsEvent) -> anyhow::Result<()> {
    match decoded {
        CloudAccountsEvent::CloudAccountConnected { tenant_id, account } => {
            let organization_id = match account.source {
                AccountSource::Standalone => None,
                AccountSource::Organization(id) => Some(id),
            };
            // A reconnect from elsewhere (standalone ↔ organization) first
            // leaves what it was part of.
            leave(conn, event, tenant_id, account.account_id.as_str(), organization_id).await?;
            let inserted = sqlx::query(
                "INSERT INTO coverage_accounts (tenant_id, account_id, organization_id, attack_version, own, inherited,
                        covered, position)
                 VALUES ($1, $2, $3, $4, '', '', '', $5) ON CONFLICT (tenant_id, account_id) DO NOTHING",
            )
            .bind(tenant_id)
            .bind(account.account_id.as_str())
            .bind(organization_id)
            .bind(&attack::latest().attack_version)
            .bind(event.position)
            .execute(&mut *conn)
            .await?
            .rows_affected();
            if inserted == 1
                && let Some(organization_id) = organization_id
            {
                sqlx::query(
                    "INSERT INTO coverage_orgs (organization_id, tenant_id, accounts) VALUES ($1, $2, 1)
                     ON CONFLICT (organization_id) DO UPDATE SET accounts = coverage_orgs.accounts + 1",
                )
                .bind(organization_id)
                .bind(tenant_id)
                .execute(&mut *conn)
                .await?;
            }
            refresh(
                conn,
                event,
                tenant_id,
                vec![account.account_id.as_str().to_owned()],
                Sides::BOTH,
            )
            .await?;
            // One more account can lower the minimum even if it adds nothing.
            if let Some(organization_id) = organization_id {
                org_snapshot(conn, event, organization_id).await?;
            }
            Ok(())
        }
        CloudAccountsEvent::CloudAccountDisconnected { tenant_id, account_id } => {
            leave(conn, event, tenant_id, account_id.as_str(), None).await
        }
    }
}

/// Removes a connected account (unless it stays in `staying_in`): its
/// techniques leave its organization's counts.
async fn leave(
    conn: &mut PgConnection,
    event: &StoredEvent,
    tenant_id: Uuid,
    account_id: &str,
    staying_in: Option<Uuid>,
) -> anyhow::Result<()> {
    let row: Option<(Option<Uuid>, Vec<u8>)> = sqlx::query_as(
        "SELECT organization_id, covered FROM coverage_accounts WHERE tenant_id = $1 AND account_id = $2",
    )
    .bind(tenant_id)
    .bind(account_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((organization_id, covered)) = row else {
        return Ok(());
    };
    if organization_id == staying_in && staying_in.is_some() {
        return Ok(());
    }
    sqlx::query("DELETE FROM coverage_accounts WHERE tenant_id = $1 AND account_id = $2")
        .bind(tenant_id)
        .bind(account_id)
        .execute(&mut *conn)
        .await?;
    if let Some(organization_id) = organization_id {
        sqlx::query("UPDATE coverage_orgs SET accounts = accounts - 1 WHERE organization_id = $1")
            .bind(organization_id)
            .execute(&mut *conn)
            .await?;
        let catalog = attack::latest();
        let deltas: BTreeMap<String, i32> = catalog
            .ids_of(&TechniqueSet::from_bytes(&covered))
            .into_iter()
            .map(|t| (t.to_string(), -1))
            .collect();
        apply_counts(conn, organization_id, &deltas).await?;
        org_snapshot(conn, event, organization_id).await?;
    }
    Ok(())
}

async fn member(conn: &mut PgConnection, organization_id: Uuid, decoded: CloudOrganizationEvent) -> anyhow::Result<()> {
    use CloudOrganizationEvent as E;
    match decoded {
        E::MemberAccountFound { account } | E::MemberAccountMoved { account, .. } => {
            sqlx::query(
                "INSERT INTO coverage_members (organization_id, account_id, path) VALUES ($1, $2, $3)
                 ON CONFLICT (organization_id, account_id) DO UPDATE SET path = excluded.path",
            )
            .bind(organization_id)
            .bind(&account.id)
            .bind(path(&account.path_names))
            .execute(&mut *conn)
            .await?;
        }
        E::MemberAccountRemoved { id, .. } => {
            sqlx::query("DELETE FROM coverage_members WHERE organization_id = $1 AND account_id = $2")
                .bind(organization_id)
                .bind(id)
                .execute(&mut *conn)
                .await?;
        }
        _ => {}
    }
    Ok(())
}

#[derive(sqlx::FromRow)]
struct AccountRow {
    account_id: String,
    organization_id: Option<Uuid>,
    own: Vec<u8>,
    inherited: Vec<u8>,
    covered: Vec<u8>,
    figures: Option<Value>,
}

/// The changed account rows of one refresh, as columns for one UPDATE.
#[derive(Default)]
struct Updates {
    accounts: Vec<String>,
    own: Vec<Vec<u8>>,
    inherited: Vec<Vec<u8>>,
    covered: Vec<Vec<u8>>,
    figures: Vec<Value>,
}

/// What a detection covers, as a set over the newest catalog.
fn covered_set(techniques: &Techniques) -> TechniqueSet {
    attack::latest().set_of(covered(DetectionStatus::Enabled, techniques))
}

/// Recomputes the given sides of `accounts` from the enabled detections,
/// writes the rows whose coverage changed, moves their organizations'
/// counts by the difference and snapshots every figure that changed.
async fn refresh(
    conn: &mut PgConnection,
    event: &StoredEvent,
    tenant_id: Uuid,
    accounts: Vec<String>,
    sides: Sides,
) -> anyhow::Result<()> {
    if accounts.is_empty() {
        return Ok(());
    }
    let catalog = attack::latest();
    let rows: Vec<AccountRow> = sqlx::query_as(
        "SELECT account_id, organization_id, own, inherited, covered, figures FROM coverage_accounts
          WHERE tenant_id = $1 AND account_id = ANY($2)",
    )
    .bind(tenant_id)
    .bind(&accounts)
    .fetch_all(&mut *conn)
    .await?;
    let mut own_by_account: HashMap<String, TechniqueSet> = HashMap::new();
    if sides.own {
        let detections: Vec<(String, sqlx::types::Json<Techniques>)> = sqlx::query_as(
            "SELECT account_id, techniques FROM detections
              WHERE tenant_id = $1 AND scope_type = 'account' AND status = 'enabled' AND account_id = ANY($2)",
        )
        .bind(tenant_id)
        .bind(&accounts)
        .fetch_all(&mut *conn)
        .await?;
        for (account_id, techniques) in &detections {
            let set = own_by_account.entry(account_id.clone()).or_default();
            *set = set.union(&covered_set(techniques));
        }
    }
    // Organization detections (the inheritance rule of
    // `coverage::applies`, grouped so each detection is read once): those for
    // every account apply alike; those for a subset, to the accounts listed.
    let mut for_all: HashMap<Uuid, TechniqueSet> = HashMap::new();
    let mut for_some: HashMap<(Uuid, String), TechniqueSet> = HashMap::new();
    if sides.inherited {
        let organizations: Vec<Uuid> = rows
            .iter()
            .filter_map(|r| r.organization_id)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let found: Vec<(Uuid, Option<Vec<String>>, sqlx::types::Json<Techniques>)> = sqlx::query_as(
            "SELECT organization_id, subset, techniques FROM detections
              WHERE scope_type = 'organization' AND status = 'enabled' AND organization_id = ANY($1)",
        )
        .bind(&organizations)
        .fetch_all(&mut *conn)
        .await?;
        for (organization_id, subset, techniques) in found {
            let set = covered_set(&techniques);
            match subset {
                None => {
                    let all = for_all.entry(organization_id).or_default();
                    *all = all.union(&set);
                }
                Some(accounts) => {
                    for account in accounts {
                        let some = for_some.entry((organization_id, account)).or_default();
                        *some = some.union(&set);
                    }
                }
            }
        }
    }
    let denominator = catalog.denominator_set(&PlatformSet::cloud());
    let mut updates = Updates::default();
    let mut snapshots = vec![];
    let mut deltas: BTreeMap<Uuid, BTreeMap<String, i32>> = BTreeMap::new();
    for row in rows {
        let (stored_own, stored_inherited) = (
            TechniqueSet::from_bytes(&row.own),
            TechniqueSet::from_bytes(&row.inherited),
        );
        let own = if sides.own {
            own_by_account.remove(&row.account_id).unwrap_or_default()
        } else {
            stored_own
        };
        let inherited = match (sides.inherited, row.organization_id) {
            (false, _) => stored_inherited,
            (true, None) => TechniqueSet::default(),
            (true, Some(organization_id)) => {
                let all = for_all.get(&organization_id).copied().unwrap_or_default();
                let some = for_some
                    .get(&(organization_id, row.account_id.clone()))
                    .copied()
                    .unwrap_or_default();
                all.union(&some)
            }
        };
        if own == stored_own && inherited == stored_inherited && row.figures.is_some() {
            continue;
        }
        let before = TechniqueSet::from_bytes(&row.covered);
        let after = own.union(&inherited);
        if let Some(organization_id) = row.organization_id {
            let counts = deltas.entry(organization_id).or_default();
            for gone in catalog.ids_of(&before.difference(&after)) {
                *counts.entry(gone.to_string()).or_default() -= 1;
            }
            for new in catalog.ids_of(&after.difference(&before)) {
                *counts.entry(new.to_string()).or_default() += 1;
            }
        }
        let figures = account_figures(&Breakdown::of(&own, &inherited, &denominator));
        if row.figures.as_ref() != Some(&figures) {
            snapshots.push(("account", row.account_id.clone(), figures.clone()));
        }
        updates.accounts.push(row.account_id);
        updates.own.push(own.to_bytes());
        updates.inherited.push(inherited.to_bytes());
        updates.covered.push(after.to_bytes());
        updates.figures.push(figures);
    }
    if !updates.accounts.is_empty() {
        sqlx::query(
            "UPDATE coverage_accounts c
                SET own = u.own, inherited = u.inherited, covered = u.covered, figures = u.figures, position = $7
               FROM unnest($2::text[], $3::bytea[], $4::bytea[], $5::bytea[], $6::jsonb[])
                    AS u(account_id, own, inherited, covered, figures)
              WHERE c.tenant_id = $1 AND c.account_id = u.account_id",
        )
        .bind(tenant_id)
        .bind(&updates.accounts)
        .bind(&updates.own)
        .bind(&updates.inherited)
        .bind(&updates.covered)
        .bind(&updates.figures)
        .bind(event.position)
        .execute(&mut *conn)
        .await?;
    }
    insert_snapshots(conn, event, tenant_id, snapshots).await?;
    for (organization_id, counts) in deltas {
        apply_counts(conn, organization_id, &counts).await?;
        org_snapshot(conn, event, organization_id).await?;
    }
    Ok(())
}

fn account_figures(breakdown: &Breakdown) -> Value {
    json!({
        "total_coverage": breakdown.total(),
        "covered": breakdown.covered.len(),
        "denominator": breakdown.denominator,
        "account_techniques": breakdown.account_only.len(),
        "org_techniques": breakdown.organization_only.len(),
        "overlap_techniques": breakdown.overlap.len(),
    })
}

async fn apply_counts(
    conn: &mut PgConnection,
    organization_id: Uuid,
    deltas: &BTreeMap<String, i32>,
) -> anyhow::Result<()> {
    let (techniques, changes): (Vec<&str>, Vec<i32>) = deltas
        .iter()
        .filter(|(_, d)| **d != 0)
        .map(|(t, d)| (t.as_str(), *d))
        .unzip();
    if techniques.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO coverage_org_techniques (organization_id, technique, accounts)
         SELECT $1, t, d FROM unnest($2::text[], $3::int[]) AS x(t, d)
         ON CONFLICT (organization_id, technique) DO UPDATE
            SET accounts = coverage_org_techniques.accounts + excluded.accounts",
    )
    .bind(organization_id)
    .bind(&techniques)
    .bind(&changes)
    .execute(&mut *conn)
    .await?;
    sqlx::query("DELETE FROM coverage_org_techniques WHERE organization_id = $1 AND accounts <= 0")
        .bind(organization_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// The organization's union and minimum over its connected accounts, from
/// the counts; a snapshot when they changed.
async fn org_snapshot(conn: &mut PgConnection, event: &StoredEvent, organization_id: Uuid) -> anyhow::Result<()> {
    let org: Option<(Uuid, i32, Option<Value>)> =
        sqlx::query_as("SELECT tenant_id, accounts, figures FROM coverage_orgs WHERE organization_id = $1")
            .bind(organization_id)
            .fetch_optional(&mut *conn)
            .await?;
    let Some((tenant_id, accounts, previous)) = org else {
        return Ok(());
    };
    let counts: Vec<(String, i32)> =
        sqlx::query_as("SELECT technique, accounts FROM coverage_org_techniques WHERE organization_id = $1")
            .bind(organization_id)
            .fetch_all(&mut *conn)
            .await?;
    let catalog = attack::latest();
    let denominator = catalog.denominator_set(&PlatformSet::cloud());
    let within = counts.iter().filter(|(t, _)| {
        TechniqueId::parse(t)
            .ok()
            .and_then(|t| catalog.index_of(&t))
            .is_some_and(|i| denominator.contains(i))
    });
    let union = within.clone().filter(|(_, n)| *n > 0).count();
    let minimum = within.filter(|(_, n)| accounts > 0 && *n >= accounts).count();
    let figures = json!({
        "accounts": accounts,
        "denominator": denominator.len(),
        "union": {"covered": union, "total_coverage": ratio(union, denominator.len())},
        "minimum": {"covered": minimum, "total_coverage": ratio(minimum, denominator.len())},
    });
    if previous.as_ref() == Some(&figures) {
        return Ok(());
    }
    sqlx::query("UPDATE coverage_orgs SET figures = $2 WHERE organization_id = $1")
        .bind(organization_id)
        .bind(&figures)
        .execute(&mut *conn)
        .await?;
    let snapshot = ("organization", organization_id.to_string(), figures);
    insert_snapshots(conn, event, tenant_id, vec![snapshot]).await
}

async fn insert_snapshots(
    conn: &mut PgConnection,
    event: &StoredEvent,
    tenant_id: Uuid,
    snapshots: Vec<(&str, String, Value)>,
) -> anyhow::Result<()> {
    if snapshots.is_empty() {
        return Ok(());
    }
    let mut columns: (Vec<&str>, Vec<String>, Vec<Value>) = Default::default();
    for (scope, scope_id, figures) in snapshots {
        columns.0.push(scope);
        columns.1.push(scope_id);
        columns.2.push(figures);
    }
    sqlx::query(
        "INSERT INTO coverage_snapshots (tenant_id, scope, scope_id, kind, position, taken_at, attack_version, figures)
         SELECT $1, s.scope, s.scope_id, 'change', $5, $6, $7, s.figures
           FROM unnest($2::text[], $3::text[], $4::jsonb[]) AS s(scope, scope_id, figures)
         ON CONFLICT DO NOTHING",
    )
    .bind(tenant_id)
    .bind(&columns.0)
    .bind(&columns.1)
    .bind(&columns.2)
    .bind(event.position)
    .bind(event.recorded_at)
    .bind(&attack::latest().attack_version)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
