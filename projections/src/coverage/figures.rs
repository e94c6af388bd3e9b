//! Recomputing figures: an account's own and inherited techniques from the
//! enabled detections, its organization's per-technique counts moved by the
//! difference, and a snapshot whenever a figure changed.

use super::Sides;
use super::batch::{Account, Batch, Snapshot};
use crate::event::StoredEvent;
use coverwatch_domain::attack::{self, TechniqueSet};
use coverwatch_domain::detection::coverage::{Breakdown, covered, ratio};
use coverwatch_domain::detection::{DetectionStatus, Techniques};
use coverwatch_domain::ids::{OrganizationId, TenantId};
use serde_json::{Value, json};
use sqlx::PgConnection;
use std::collections::{BTreeSet, HashMap};

/// An enabled organization detection: its organization, subset (None: all
/// accounts), whether it is derived from an organization source, techniques.
type OrganizationDetection = (OrganizationId, Option<Vec<String>>, bool, sqlx::types::Json<Techniques>);

/// What a detection covers, as a set over the newest catalog.
fn covered_set(techniques: &Techniques) -> TechniqueSet {
    attack::latest().set_of(covered(DetectionStatus::Enabled, techniques))
}

/// Recomputes the given sides of `accounts` from the enabled detections,
/// keeps the accounts whose coverage changed, moves their organizations'
/// counts by the difference and snapshots every figure that changed.
pub(super) async fn refresh(
    conn: &mut PgConnection,
    batch: &mut Batch,
    event: &StoredEvent,
    tenant_id: TenantId,
    accounts: Vec<String>,
    sides: Sides,
) -> anyhow::Result<()> {
    batch.load(conn, tenant_id, &accounts).await?;
    let accounts: Vec<(String, Account)> = accounts
        .into_iter()
        .filter_map(|a| {
            let account = batch.accounts.get(&(tenant_id, a.clone())).cloned().flatten()?;
            Some((a, account))
        })
        .collect();
    if accounts.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = accounts.iter().map(|(a, _)| a.as_str()).collect();
    let mut own_by_account: HashMap<String, TechniqueSet> = HashMap::new();
    if sides.own {
        let detections: Vec<(String, sqlx::types::Json<Techniques>)> = sqlx::query_as(
            "SELECT account_id, techniques FROM detections
              WHERE tenant_id = $1 AND scope_type = 'account' AND status = 'enabled' AND account_id = ANY($2)",
        )
        .bind(tenant_id)
        .bind(&ids)
        .fetch_all(&mut *conn)
        .await?;
        for (account_id, techniques) in &detections {
            let set = own_by_account.entry(account_id.clone()).or_default();
            *set = set.union(&covered_set(techniques));
        }
        // What the account's scans found deployed there (see `scans`).
        let scanned: Vec<(String, Vec<u8>)> = sqlx::query_as(
            "SELECT account_id, scanned FROM coverage_scan_accounts WHERE tenant_id = $1 AND account_id = ANY($2)",
        )
        .bind(tenant_id)
        .bind(&ids)
        .fetch_all(&mut *conn)
        .await?;
        for (account_id, bytes) in scanned {
            let set = own_by_account.entry(account_id).or_default();
            *set = set.union(&TechniqueSet::from_bytes(&bytes));
        }
    }
    // Organization detections (the inheritance rule of
    // `coverage::applies`, grouped so each detection is read once): those for
    // every account apply alike; those for a subset, to the accounts listed.
    let mut for_all: HashMap<OrganizationId, TechniqueSet> = HashMap::new();
    // Derived from organization sources: not for accounts in error.
    let mut derived: HashMap<OrganizationId, TechniqueSet> = HashMap::new();
    let mut for_some: HashMap<(OrganizationId, String), TechniqueSet> = HashMap::new();
    if sides.inherited {
        let organizations: Vec<OrganizationId> = accounts
            .iter()
            .filter_map(|(_, a)| a.organization_id)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let found: Vec<OrganizationDetection> = sqlx::query_as(
            "SELECT organization_id, subset, derived_source_id IS NOT NULL, techniques FROM detections
              WHERE scope_type = 'organization' AND status = 'enabled' AND organization_id = ANY($1)",
        )
        .bind(&organizations)
        .fetch_all(&mut *conn)
        .await?;
        for (organization_id, subset, is_derived, techniques) in found {
            let set = covered_set(&techniques);
            match subset {
                None if is_derived => {
                    let all = derived.entry(organization_id).or_default();
                    *all = all.union(&set);
                }
                None => {
                    let all = for_all.entry(organization_id).or_default();
                    *all = all.union(&set);
                }
                Some(listed) => {
                    for account in listed {
                        let some = for_some.entry((organization_id, account)).or_default();
                        *some = some.union(&set);
                    }
                }
            }
        }
    }
    let denominator = *attack::latest().cloud_denominator();
    let mut touched = BTreeSet::new();
    for (account_id, stored) in accounts {
        let own = if sides.own {
            own_by_account.remove(&account_id).unwrap_or_default()
        } else {
            stored.own
        };
        let inherited = match (sides.inherited, stored.organization_id) {
            (false, _) => stored.inherited,
            (true, None) => TechniqueSet::default(),
            (true, Some(organization_id)) => {
                let mut all = for_all.get(&organization_id).copied().unwrap_or_default();
                if !stored.in_error {
                    all = all.union(&derived.get(&organization_id).copied().unwrap_or_default());
                }
                let some = for_some
                    .get(&(organization_id, account_id.clone()))
                    .copied()
                    .unwrap_or_default();
                all.union(&some)
            }
        };
        if own == stored.own && inherited == stored.inherited && stored.figures.is_some() {
            continue;
        }
        let (before, after) = (stored.covered(), own.union(&inherited));
        if let Some(organization_id) = stored.organization_id
            && before != after
            && let Some(organization) = batch.organization(conn, organization_id).await?
        {
            for gone in before.difference(&after).iter() {
                *organization.counts.entry(gone).or_default() -= 1;
            }
            for new in after.difference(&before).iter() {
                *organization.counts.entry(new).or_default() += 1;
            }
            touched.insert(organization_id);
        }
        let figures = account_figures(&Breakdown::of(&own, &inherited, &denominator));
        if !stored
            .figures
            .as_ref()
            .is_some_and(|stored| same_counts(stored, &figures))
        {
            batch.snapshots.push(Snapshot {
                tenant_id,
                scope: "account",
                scope_id: account_id.clone(),
                position: event.position,
                taken_at: event.recorded_at,
                figures: figures.clone(),
            });
        }
        let updated = Account {
            organization_id: stored.organization_id,
            in_error: stored.in_error,
            own,
            inherited,
            figures: Some(figures),
            position: event.position,
        };
        batch.set_account(tenant_id, &account_id, Some(updated));
    }
    for organization_id in touched {
        org_snapshot(conn, batch, event, organization_id).await?;
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

/// The organization's union and minimum over its connected accounts, from
/// the counts; a snapshot when they changed.
pub(super) async fn org_snapshot(
    conn: &mut PgConnection,
    batch: &mut Batch,
    event: &StoredEvent,
    organization_id: OrganizationId,
) -> anyhow::Result<()> {
    let denominator = *attack::latest().cloud_denominator();
    let Some(organization) = batch.organization(conn, organization_id).await? else {
        return Ok(());
    };
    let within = organization.counts.iter().filter(|(i, _)| denominator.contains(**i));
    let union = within.clone().filter(|(_, n)| **n > 0).count();
    let accounts = organization.accounts;
    let minimum = within.filter(|(_, n)| accounts > 0 && **n >= accounts).count();
    let figures = json!({
        "accounts": accounts,
        "denominator": denominator.len(),
        "union": {"covered": union, "total_coverage": ratio(union, denominator.len())},
        "minimum": {"covered": minimum, "total_coverage": ratio(minimum, denominator.len())},
    });
    if organization
        .figures
        .as_ref()
        .is_some_and(|stored| same_counts(stored, &figures))
    {
        return Ok(());
    }
    organization.figures = Some(figures.clone());
    let tenant_id = organization.tenant_id;
    batch.snapshots.push(Snapshot {
        tenant_id,
        scope: "organization",
        scope_id: organization_id.to_string(),
        position: event.position,
        taken_at: event.recorded_at,
        figures,
    });
    Ok(())
}

/// Whether two sets of figures say the same thing: every count equal. The
/// ratios are derived from the counts and never compared: a ratio read back
/// from the database is not always the float that was written (JSON text
/// does not parse back to every `f64` exactly, e.g. 2/151), and comparing it
/// would take a snapshot of figures that did not change (which a rebuild,
/// comparing in memory, would not).
fn same_counts(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            a.len() == b.len() && a.iter().all(|(key, x)| b.get(key).is_some_and(|y| same_counts(x, y)))
        }
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => x.is_f64() && y.is_f64(),
        (x, y) => x == y,
    }
}

#[cfg(test)]
mod tests {
    use super::same_counts;
    use serde_json::json;

    #[test]
    fn counts_decide_and_ratios_do_not() {
        let written = json!({"covered": 2, "denominator": 151, "total_coverage": 2.0 / 151.0});
        let read_back: serde_json::Value = serde_json::from_str(&written.to_string()).unwrap();
        assert!(same_counts(&written, &read_back));
        let moved = json!({"covered": 3, "denominator": 151, "total_coverage": 3.0 / 151.0});
        assert!(!same_counts(&written, &moved));
        let nested = json!({"union": {"covered": 2, "total_coverage": 0.5}, "accounts": 4});
        assert!(!same_counts(
            &nested,
            &json!({"union": {"covered": 2, "total_coverage": 0.5}, "accounts": 5})
        ));
    }
}
