//! What one batch changed, kept in memory and written once at its end.

use coverwatch_domain::attack::{self, TechniqueId, TechniqueSet};
use coverwatch_domain::detection::DetectionScope;
use coverwatch_domain::ids::{OrganizationId, TenantId};
use serde_json::Value;
use sqlx::PgConnection;
use std::collections::{BTreeSet, HashMap};

/// One connected account's coverage, as the batch sees it.
#[derive(Debug, Clone)]
pub(super) struct Account {
    pub(super) organization_id: Option<OrganizationId>,
    /// Its organization membership is in error (see `member`).
    pub(super) in_error: bool,
    pub(super) own: TechniqueSet,
    pub(super) inherited: TechniqueSet,
    pub(super) figures: Option<Value>,
    pub(super) position: i64,
}

impl Account {
    pub(super) fn covered(&self) -> TechniqueSet {
        self.own.union(&self.inherited)
    }
}

/// An organization's connected-account count, per-technique account counts
/// (by catalog index) and last snapshot figures.
#[derive(Debug, Clone)]
pub(super) struct Organization {
    pub(super) tenant_id: TenantId,
    pub(super) accounts: i32,
    pub(super) counts: HashMap<usize, i32>,
    pub(super) figures: Option<Value>,
}

/// What one batch changed, kept in memory and written once at its end: a
/// batch (up to thousands of events while catching up) touches the same
/// rows again and again, and rewriting them per event inside one
/// transaction would pile up row versions.
#[derive(Default)]
pub(super) struct Batch {
    /// (tenant, account) → the account (None: not connected).
    pub(super) accounts: HashMap<(TenantId, String), Option<Account>>,
    pub(super) changed_accounts: BTreeSet<(TenantId, String)>,
    pub(super) organizations: HashMap<OrganizationId, Option<Organization>>,
    pub(super) changed_organizations: BTreeSet<OrganizationId>,
    pub(super) snapshots: Vec<Snapshot>,
}

pub(super) struct Snapshot {
    pub(super) tenant_id: TenantId,
    pub(super) scope: &'static str,
    pub(super) scope_id: String,
    pub(super) position: i64,
    pub(super) taken_at: chrono::DateTime<chrono::Utc>,
    pub(super) figures: Value,
}

#[derive(sqlx::FromRow)]
struct AccountRow {
    account_id: String,
    organization_id: Option<OrganizationId>,
    in_error: Option<bool>,
    own: Vec<u8>,
    inherited: Vec<u8>,
    figures: Option<Value>,
    position: i64,
}

impl Batch {
    /// Loads the accounts not yet in the batch.
    pub(super) async fn load(
        &mut self,
        conn: &mut PgConnection,
        tenant_id: TenantId,
        accounts: &[String],
    ) -> anyhow::Result<()> {
        let missing: Vec<&String> = accounts
            .iter()
            .filter(|a| !self.accounts.contains_key(&(tenant_id, (*a).clone())))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let rows: Vec<AccountRow> = sqlx::query_as(
            "SELECT c.account_id, c.organization_id, m.in_error, c.own, c.inherited, c.figures, c.position
               FROM coverage_accounts c
               LEFT JOIN coverage_members m ON m.organization_id = c.organization_id AND m.account_id = c.account_id
              WHERE c.tenant_id = $1 AND c.account_id = ANY($2)",
        )
        .bind(tenant_id)
        .bind(&missing)
        .fetch_all(&mut *conn)
        .await?;
        for account in missing {
            self.accounts.insert((tenant_id, account.clone()), None);
        }
        for row in rows {
            let account = Account {
                organization_id: row.organization_id,
                in_error: row.in_error.unwrap_or(false),
                own: TechniqueSet::from_bytes(&row.own),
                inherited: TechniqueSet::from_bytes(&row.inherited),
                figures: row.figures,
                position: row.position,
            };
            self.accounts.insert((tenant_id, row.account_id), Some(account));
        }
        Ok(())
    }

    pub(super) fn set_account(&mut self, tenant_id: TenantId, account_id: &str, account: Option<Account>) {
        let key = (tenant_id, account_id.to_owned());
        self.changed_accounts.insert(key.clone());
        self.accounts.insert(key, account);
    }

    pub(super) async fn organization(
        &mut self,
        conn: &mut PgConnection,
        organization_id: OrganizationId,
    ) -> anyhow::Result<Option<&mut Organization>> {
        if let std::collections::hash_map::Entry::Vacant(slot) = self.organizations.entry(organization_id) {
            let row: Option<(TenantId, i32, Option<Value>)> =
                sqlx::query_as("SELECT tenant_id, accounts, figures FROM coverage_orgs WHERE organization_id = $1")
                    .bind(organization_id)
                    .fetch_optional(&mut *conn)
                    .await?;
            let loaded = match row {
                None => None,
                Some((tenant_id, accounts, figures)) => {
                    let catalog = attack::latest();
                    let counts: Vec<(String, i32)> = sqlx::query_as(
                        "SELECT technique, accounts FROM coverage_org_techniques WHERE organization_id = $1",
                    )
                    .bind(organization_id)
                    .fetch_all(&mut *conn)
                    .await?;
                    let counts = counts
                        .into_iter()
                        .filter_map(|(t, n)| {
                            let index = TechniqueId::parse(&t).ok().and_then(|t| catalog.index_of(&t))?;
                            Some((index, n))
                        })
                        .collect();
                    Some(Organization {
                        tenant_id,
                        accounts,
                        counts,
                        figures,
                    })
                }
            };
            slot.insert(loaded);
        }
        self.changed_organizations.insert(organization_id);
        Ok(self.organizations.get_mut(&organization_id).and_then(Option::as_mut))
    }

    /// The connected accounts a scope reaches (an account scope names its
    /// one account; `refresh` skips it unless it is connected).
    pub(super) async fn accounts_in(
        &mut self,
        conn: &mut PgConnection,
        tenant_id: TenantId,
        scope: &DetectionScope,
    ) -> anyhow::Result<Vec<String>> {
        let (organization_id, subset) = match scope {
            DetectionScope::Account { account_id } => return Ok(vec![account_id.as_str().to_owned()]),
            DetectionScope::Organization {
                organization_id,
                accounts,
            } => (*organization_id, accounts),
        };
        let stored: Vec<String> = sqlx::query_scalar(
            "SELECT account_id FROM coverage_accounts WHERE organization_id = $1 AND tenant_id = $2",
        )
        .bind(organization_id)
        .bind(tenant_id)
        .fetch_all(&mut *conn)
        .await?;
        // What the batch connected or disconnected since overrides the table.
        let mut reached: BTreeSet<String> = stored.into_iter().collect();
        for ((tenant, account_id), account) in &self.accounts {
            if *tenant != tenant_id {
                continue;
            }
            match account {
                Some(a) if a.organization_id == Some(organization_id) => reached.insert(account_id.clone()),
                _ => reached.remove(account_id),
            };
        }
        Ok(match subset {
            None => reached.into_iter().collect(),
            Some(subset) => reached.into_iter().filter(|a| subset.contains(a.as_str())).collect(),
        })
    }

    /// Writes what the batch changed: accounts, organizations, counts and
    /// the snapshots it took.
    pub(super) async fn flush(self, conn: &mut PgConnection) -> anyhow::Result<()> {
        let mut upserts = Updates::default();
        let mut deletes: (Vec<TenantId>, Vec<String>) = Default::default();
        for key in &self.changed_accounts {
            match &self.accounts[key] {
                None => {
                    deletes.0.push(key.0);
                    deletes.1.push(key.1.clone());
                }
                Some(account) => {
                    upserts.tenants.push(key.0);
                    upserts.accounts.push(key.1.clone());
                    upserts.organizations.push(account.organization_id);
                    upserts.own.push(account.own.to_bytes());
                    upserts.inherited.push(account.inherited.to_bytes());
                    upserts.covered.push(account.covered().to_bytes());
                    upserts.figures.push(account.figures.clone());
                    upserts.positions.push(account.position);
                }
            }
        }
        if !deletes.0.is_empty() {
            sqlx::query(
                "DELETE FROM coverage_accounts c USING unnest($1::uuid[], $2::text[]) AS d(tenant_id, account_id)
                  WHERE c.tenant_id = d.tenant_id AND c.account_id = d.account_id",
            )
            .bind(&deletes.0)
            .bind(&deletes.1)
            .execute(&mut *conn)
            .await?;
        }
        if !upserts.accounts.is_empty() {
            sqlx::query(
                "INSERT INTO coverage_accounts (tenant_id, account_id, organization_id, attack_version, own, inherited,
                        covered, figures, position)
                 SELECT u.tenant_id, u.account_id, u.organization_id, $9, u.own, u.inherited, u.covered, u.figures,
                        u.position
                   FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::bytea[], $5::bytea[], $6::bytea[], $7::jsonb[],
                               $8::bigint[])
                        AS u(tenant_id, account_id, organization_id, own, inherited, covered, figures, position)
                 ON CONFLICT (tenant_id, account_id) DO UPDATE SET organization_id = excluded.organization_id,
                    own = excluded.own, inherited = excluded.inherited, covered = excluded.covered,
                    figures = excluded.figures, position = excluded.position",
            )
            .bind(&upserts.tenants)
            .bind(&upserts.accounts)
            .bind(&upserts.organizations)
            .bind(&upserts.own)
            .bind(&upserts.inherited)
            .bind(&upserts.covered)
            .bind(&upserts.figures)
            .bind(&upserts.positions)
            .bind(&attack::latest().attack_version)
            .execute(&mut *conn)
            .await?;
        }
        let catalog = attack::latest();
        for organization_id in &self.changed_organizations {
            let Some(Some(organization)) = self.organizations.get(organization_id) else {
                continue;
            };
            sqlx::query(
                "INSERT INTO coverage_orgs (organization_id, tenant_id, accounts, figures) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (organization_id) DO UPDATE SET accounts = excluded.accounts, figures = excluded.figures",
            )
            .bind(organization_id)
            .bind(organization.tenant_id)
            .bind(organization.accounts)
            .bind(&organization.figures)
            .execute(&mut *conn)
            .await?;
            sqlx::query("DELETE FROM coverage_org_techniques WHERE organization_id = $1")
                .bind(organization_id)
                .execute(&mut *conn)
                .await?;
            let (techniques, counts): (Vec<String>, Vec<i32>) = organization
                .counts
                .iter()
                .filter(|(_, n)| **n > 0)
                .filter_map(|(i, n)| catalog.id_at(*i).map(|t| (t.to_string(), *n)))
                .unzip();
            sqlx::query(
                "INSERT INTO coverage_org_techniques (organization_id, technique, accounts)
                 SELECT $1, t, n FROM unnest($2::text[], $3::int[]) AS x(t, n)",
            )
            .bind(organization_id)
            .bind(&techniques)
            .bind(&counts)
            .execute(&mut *conn)
            .await?;
        }
        if !self.snapshots.is_empty() {
            let mut columns: SnapshotColumns = Default::default();
            for snapshot in self.snapshots {
                columns.tenants.push(snapshot.tenant_id);
                columns.scopes.push(snapshot.scope);
                columns.ids.push(snapshot.scope_id);
                columns.positions.push(snapshot.position);
                columns.times.push(snapshot.taken_at);
                columns.figures.push(snapshot.figures);
            }
            sqlx::query(
                "INSERT INTO coverage_snapshots (tenant_id, scope, scope_id, kind, position, taken_at, attack_version,
                        figures)
                 SELECT s.tenant_id, s.scope, s.scope_id, 'change', s.position, s.taken_at, $7, s.figures
                   FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bigint[], $5::timestamptz[], $6::jsonb[])
                        AS s(tenant_id, scope, scope_id, position, taken_at, figures)
                 ON CONFLICT DO NOTHING",
            )
            .bind(&columns.tenants)
            .bind(&columns.scopes)
            .bind(&columns.ids)
            .bind(&columns.positions)
            .bind(&columns.times)
            .bind(&columns.figures)
            .bind(&attack::latest().attack_version)
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    }
}

#[derive(Default)]
struct Updates {
    tenants: Vec<TenantId>,
    accounts: Vec<String>,
    organizations: Vec<Option<OrganizationId>>,
    own: Vec<Vec<u8>>,
    inherited: Vec<Vec<u8>>,
    covered: Vec<Vec<u8>>,
    figures: Vec<Option<Value>>,
    positions: Vec<i64>,
}

#[derive(Default)]
struct SnapshotColumns {
    tenants: Vec<TenantId>,
    scopes: Vec<&'static str>,
    ids: Vec<String>,
    positions: Vec<i64>,
    times: Vec<chrono::DateTime<chrono::Utc>>,
    figures: Vec<Value>,
}
