//! Scan runs: scan connected accounts' detections (`adapters::aws::scan`)
//! as durable jobs, one per account (`jobs`: retried with backoff, taken
//! over when a worker dies, one at a time per account, shared by every
//! worker process), and record each account's findings on its
//! AccountInventory aggregate, which appends only what changed. The run's
//! progress rows (`scan_runs`, `scan_run_accounts`, owned here) say what
//! each account's scan did: regions, calls, errors per service. Runs start
//! on demand (an account, an organization's connected accounts or a
//! subtree) or on schedule (the plan's interval, spread over it). Commands
//! do not wait for them: starting a run answers at once with its id.

use super::jobs::{JobSettings, JobTask, Runner};
use crate::adapters::aws::scan::{ScanError as CallError, ScanTarget, Scanner};
use crate::error::CommandError;
use crate::executor::{CloudAccountsCommands, CloudOrganizationCommands, InventoryCommands, RETRIES};
use crate::metadata::CommandMetadata;
use crate::services::BillingService;
use crate::services::cloud_organizations::external_id;
use chrono::{DateTime, Utc};
use coverwatch_domain::cloud::hierarchy::path;
use coverwatch_domain::cloud::values::{AwsAccountId, Region};
use coverwatch_domain::cloud::{AccountSource, AccountStatus};
use coverwatch_domain::ids::{OrganizationId, RunId, TenantId};
use coverwatch_domain::scan::inventory::{InventoryCommand, inventory_id};
use coverwatch_projections::cloud::queries::all_connected;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use sqlx::types::Json;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use underway::Queue;
use underway::task::Error as TaskError;

/// What a run covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanScope {
    Account(AwsAccountId),
    /// The organization's connected accounts (under `path_prefix`, when set).
    Organization {
        organization_id: OrganizationId,
        path_prefix: Option<String>,
    },
}

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0} is not a connected account of the tenant")]
    NotConnected(String),
    #[error("cloud organization not found")]
    UnknownOrganization,
    #[error("no connected account of the organization is in scope")]
    NothingToScan,
    #[error("{0}")]
    AlreadyRunning(String),
    #[error(transparent)]
    Command(#[from] CommandError),
}

impl From<sqlx::Error> for StartError {
    fn from(error: sqlx::Error) -> Self {
        Self::Command(error.into())
    }
}

/// One account's scan, as a job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScanJob {
    pub run_id: RunId,
    pub tenant_id: TenantId,
    pub account_id: String,
}

/// The job kind: `ScanWorkflow::scan_one`, one account at a time.
pub type ScanTask = JobTask<ScanWorkflow>;

impl Runner for ScanWorkflow {
    type Input = ScanJob;

    fn lock_key(job: &ScanJob) -> String {
        format!("scan:{}:{}", job.tenant_id, job.account_id)
    }

    fn settings(&self) -> &JobSettings {
        &self.jobs
    }

    async fn run(&self, job: ScanJob) -> Result<(), TaskError> {
        self.scan_one(&job)
            .await
            .map_err(|error| TaskError::Retryable(format!("{error:#}")))
    }
}

pub struct ScanWorkflow {
    pub scanner: Scanner,
    pub inventory: Arc<InventoryCommands>,
    pub accounts: Arc<CloudAccountsCommands>,
    pub organizations: Arc<CloudOrganizationCommands>,
    pub billing: Arc<BillingService>,
    pub pool: PgPool,
    pub queue: Arc<Queue<ScanTask>>,
    pub jobs: JobSettings,
}

/// A run as its rows hold it.
#[derive(Debug, Clone, sqlx::FromRow, Serialize)]
pub struct RunRow {
    pub run_id: RunId,
    pub tenant_id: TenantId,
    pub scope: String,
    pub scope_id: String,
    pub path_prefix: Option<String>,
    pub trigger: String,
    pub status: String,
    pub accounts_total: i32,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// One account of a run.
#[derive(Debug, Clone, sqlx::FromRow, Serialize)]
pub struct RunAccountRow {
    pub account_id: String,
    pub status: String,
    pub attempts: i32,
    pub regions: Vec<String>,
    pub calls: Json<BTreeMap<String, u64>>,
    pub errors: Json<Vec<CallError>>,
    pub changed: Option<bool>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// The process that scanned it last (host:pid).
    pub worker: Option<String>,
}

/// This process, as run rows name it: host and process id.
fn worker_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!("{host}:{}", std::process::id())
}

/// The accounts a run covers, resolved against the CloudAccounts aggregate
/// (not a read model that may lag).
struct Resolved {
    scope: &'static str,
    scope_id: String,
    accounts: Vec<String>,
}

impl ScanWorkflow {
    fn now(&self) -> DateTime<Utc> {
        self.billing.clock.now()
    }

    /// Starts a run: one job per connected account in scope; an account
    /// already being scanned is marked skipped in this run. Answers with the
    /// run id at once.
    pub async fn start(
        self: &Arc<Self>,
        tenant_id: TenantId,
        scope: ScanScope,
        trigger: &str,
    ) -> Result<RunId, StartError> {
        let resolved = self.resolve(tenant_id, &scope).await?;
        if let ScanScope::Organization { organization_id, .. } = &scope {
            let running: Option<RunId> = sqlx::query_scalar(
                "SELECT run_id FROM scan_runs WHERE tenant_id = $1 AND scope = 'organization' AND scope_id = $2
                   AND status = 'running' LIMIT 1",
            )
            .bind(tenant_id)
            .bind(organization_id.to_string())
            .fetch_optional(&self.pool)
            .await?;
            if let Some(run) = running {
                return Err(StartError::AlreadyRunning(format!(
                    "a scan of this organization is already running: {run}"
                )));
            }
        }
        let path_prefix = match &scope {
            ScanScope::Organization { path_prefix, .. } => path_prefix.clone(),
            ScanScope::Account(_) => None,
        };
        self.launch(tenant_id, resolved, path_prefix, trigger).await
    }

    async fn launch(
        self: &Arc<Self>,
        tenant_id: TenantId,
        resolved: Resolved,
        path_prefix: Option<String>,
        trigger: &str,
    ) -> Result<RunId, StartError> {
        // Under an Idempotency-Key, a retry names the same run: if its first
        // attempt launched it, that run is the answer.
        let run_id: RunId = crate::idempotency::fresh_id("scan-run");
        let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM scan_runs WHERE run_id = $1)")
            .bind(run_id)
            .fetch_one(&self.pool)
            .await?;
        if exists {
            return Ok(run_id);
        }
        let now = self.now();
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO scan_runs (run_id, tenant_id, scope, scope_id, path_prefix, trigger, status, accounts_total,
                    started_at)
             VALUES ($1, $2, $3, $4, $5, $6, 'running', $7, $8)",
        )
        .bind(run_id)
        .bind(tenant_id)
        .bind(resolved.scope)
        .bind(&resolved.scope_id)
        .bind(&path_prefix)
        .bind(trigger)
        .bind(resolved.accounts.len() as i32)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let task = JobTask(self.clone());
        for account_id in &resolved.accounts {
            let job = ScanJob {
                run_id,
                tenant_id,
                account_id: account_id.clone(),
            };
            self.queue
                .enqueue(&mut *tx, &task, &job)
                .await
                .map_err(|error| CommandError::Unexpected(anyhow::anyhow!(error).context("enqueueing a scan")))?;
            sqlx::query(
                "INSERT INTO scan_run_accounts (run_id, tenant_id, account_id, status) VALUES ($1, $2, $3, 'queued')",
            )
            .bind(run_id)
            .bind(tenant_id)
            .bind(account_id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        self.finish_if_done(run_id).await?;
        Ok(run_id)
    }

    async fn resolve(&self, tenant_id: TenantId, scope: &ScanScope) -> Result<Resolved, StartError> {
        let accounts = self.accounts.load(tenant_id).await?;
        match scope {
            ScanScope::Account(account_id) => {
                let connected = accounts
                    .accounts
                    .get(account_id)
                    .is_some_and(|a| a.status == AccountStatus::Connected);
                if !connected {
                    return Err(StartError::NotConnected(account_id.to_string()));
                }
                Ok(Resolved {
                    scope: "account",
                    scope_id: account_id.to_string(),
                    accounts: vec![account_id.to_string()],
                })
            }
            ScanScope::Organization {
                organization_id,
                path_prefix,
            } => {
                let organization = self.organizations.load(*organization_id).await?;
                if organization.tenant_id != Some(tenant_id) {
                    return Err(StartError::UnknownOrganization);
                }
                let prefix = path_prefix.as_deref().map(|p| p.trim_end_matches('/'));
                let in_scope: Vec<String> = accounts
                    .accounts
                    .iter()
                    .filter(|(_, a)| {
                        a.status == AccountStatus::Connected
                            && a.account.source == AccountSource::Organization(*organization_id)
                    })
                    .filter(|(id, _)| match prefix {
                        None => true,
                        Some(prefix) => organization.accounts.get(id.as_str()).is_some_and(|member| {
                            let member_path = path(&member.path_names);
                            member_path == prefix || member_path.starts_with(&format!("{prefix}/"))
                        }),
                    })
                    .map(|(id, _)| id.to_string())
                    .collect();
                if in_scope.is_empty() {
                    return Err(StartError::NothingToScan);
                }
                Ok(Resolved {
                    scope: "organization",
                    scope_id: organization_id.to_string(),
                    accounts: in_scope,
                })
            }
        }
    }

    /// Scans one account and records what changed. Run again after a crash,
    /// it scans again: the inventory appends only what differs.
    pub async fn scan_one(&self, job: &ScanJob) -> anyhow::Result<()> {
        sqlx::query(
            "UPDATE scan_run_accounts SET status = 'running', attempts = attempts + 1, started_at = $3, worker = $4
              WHERE run_id = $1 AND account_id = $2",
        )
        .bind(job.run_id)
        .bind(&job.account_id)
        .bind(self.now())
        .bind(worker_name())
        .execute(&self.pool)
        .await?;
        let account_id = AwsAccountId::parse(&job.account_id).map_err(|e| anyhow::anyhow!(e))?;
        let Some(target) = self.target(job.tenant_id, &account_id).await? else {
            // Disconnected since the run started: nothing to scan.
            self.finish_account(job, "skipped", &Default::default(), None).await?;
            return Ok(());
        };
        let scan = self.scanner.scan(&target).await;
        tracing::info!(
            run_id = %job.run_id,
            account = %job.account_id,
            regions = scan.regions.len(),
            observations = scan.observations.len(),
            errors = scan.errors.len(),
            "scanned an account"
        );
        let changed = if scan.read.is_empty() {
            None
        } else {
            let metadata = CommandMetadata {
                actor: "system".into(),
                causation_id: job.run_id.to_string(),
                ..CommandMetadata::system(job.tenant_id)
            };
            let command = InventoryCommand::RecordScan {
                tenant_id: job.tenant_id,
                account_id: account_id.clone(),
                run_id: job.run_id,
                regions: scan.regions.clone(),
                observations: scan.observations.clone(),
                read: scan.read.clone(),
            };
            let committed = self
                .inventory
                .execute_retrying(inventory_id(job.tenant_id, &account_id), command, &metadata, RETRIES)
                .await?;
            Some(committed.position > 0)
        };
        let status = if scan.read.is_empty() { "failed" } else { "done" };
        self.finish_account(job, status, &scan, changed).await?;
        Ok(())
    }

    /// How to reach the account, if it is still connected: its role, the
    /// tenant's external id, and the regions the tenant narrowed it to (the
    /// account's own, else its organization's).
    async fn target(&self, tenant_id: TenantId, account_id: &AwsAccountId) -> anyhow::Result<Option<ScanTarget>> {
        let accounts = self.accounts.load(tenant_id).await?;
        let Some(state) = accounts
            .accounts
            .get(account_id)
            .filter(|a| a.status == AccountStatus::Connected)
        else {
            return Ok(None);
        };
        let regions = match (&state.scan_regions, state.account.source) {
            (Some(regions), _) => Some(regions.clone()),
            (None, AccountSource::Organization(organization_id)) => {
                self.organizations.load(organization_id).await?.scan_regions
            }
            (None, AccountSource::Standalone) => None,
        };
        Ok(Some(ScanTarget {
            account_id: account_id.clone(),
            role_arn: state.account.role_arn.to_string(),
            external_id: external_id(tenant_id),
            home_region: state.account.region.clone(),
            regions,
        }))
    }

    async fn finish_account(
        &self,
        job: &ScanJob,
        status: &str,
        scan: &crate::adapters::aws::scan::AccountScan,
        changed: Option<bool>,
    ) -> anyhow::Result<()> {
        let regions: Vec<&str> = scan.regions.iter().map(Region::as_str).collect();
        let calls: BTreeMap<&str, u64> = scan.calls.iter().map(|(k, v)| (*k, *v)).collect();
        sqlx::query(
            "UPDATE scan_run_accounts SET status = $3, regions = $4, calls = $5, errors = $6, changed = $7,
                    finished_at = $8
              WHERE run_id = $1 AND account_id = $2",
        )
        .bind(job.run_id)
        .bind(&job.account_id)
        .bind(status)
        .bind(&regions)
        .bind(Json(&calls))
        .bind(Json(&scan.errors))
        .bind(changed)
        .bind(self.now())
        .execute(&self.pool)
        .await?;
        self.finish_if_done(job.run_id).await?;
        Ok(())
    }

    /// A run whose every account is finished is done.
    async fn finish_if_done(&self, run_id: RunId) -> sqlx::Result<()> {
        sqlx::query(
            "UPDATE scan_runs SET status = 'done', finished_at = $2
              WHERE run_id = $1 AND status = 'running'
                AND NOT EXISTS (SELECT 1 FROM scan_run_accounts
                                 WHERE run_id = $1 AND status IN ('queued', 'running'))",
        )
        .bind(run_id)
        .bind(self.now())
        .execute(&self.pool)
        .await
        .map(drop)
    }

    /// Starts the scans the schedule calls for: per tenant whose plan scans
    /// on schedule, its connected accounts past their phase point in the
    /// interval since their last scan (or since they connected) and not
    /// being scanned now; accounts have their own phase, so a tenant's
    /// accounts spread over the interval instead of starting together. One
    /// run per tenant; one process at a time decides.
    pub async fn scan_due(self: &Arc<Self>, now: DateTime<Utc>) -> anyhow::Result<usize> {
        const LOCK: &str = "coverwatch-scan-schedule";
        let Some(lock) = super::try_lock(&self.pool, LOCK).await? else {
            return Ok(0);
        };
        let started = self.scan_due_locked(now).await;
        super::unlock(lock, LOCK).await;
        started
    }

    async fn scan_due_locked(self: &Arc<Self>, now: DateTime<Utc>) -> anyhow::Result<usize> {
        /// A connected account: when it connected and last finished a scan.
        type Due = (String, DateTime<Utc>, Option<DateTime<Utc>>);
        let last: Vec<(TenantId, String, Option<DateTime<Utc>>, bool)> = sqlx::query_as(
            "SELECT tenant_id, account_id, max(finished_at) FILTER (WHERE status IN ('done', 'failed')),
                    bool_or(status IN ('queued', 'running'))
               FROM scan_run_accounts GROUP BY tenant_id, account_id",
        )
        .fetch_all(&self.pool)
        .await?;
        let busy: BTreeSet<(TenantId, String)> = last
            .iter()
            .filter(|(_, _, _, busy)| *busy)
            .map(|(t, a, _, _)| (*t, a.clone()))
            .collect();
        let last: BTreeMap<(TenantId, String), Option<DateTime<Utc>>> =
            last.into_iter().map(|(t, a, at, _)| ((t, a), at)).collect();
        let mut by_tenant: BTreeMap<TenantId, Vec<Due>> = BTreeMap::new();
        for (tenant_id, account_id, connected_at) in all_connected(&self.pool).await? {
            let key = (tenant_id, account_id);
            if busy.contains(&key) {
                continue;
            }
            let finished = last.get(&key).copied().flatten();
            by_tenant
                .entry(tenant_id)
                .or_default()
                .push((key.1, connected_at, finished));
        }
        let mut started = 0;
        for (tenant_id, accounts) in by_tenant {
            let hours = self.billing.entitlements(tenant_id).await?.scan_interval_hours;
            if hours == 0 {
                continue;
            }
            let interval = chrono::Duration::hours(i64::from(hours));
            let due: BTreeSet<String> = accounts
                .into_iter()
                .filter(|(account_id, connected_at, last)| {
                    super::due(account_id, interval, last.unwrap_or(*connected_at), now)
                })
                .map(|(account_id, _, _)| account_id)
                .collect();
            if due.is_empty() {
                continue;
            }
            let resolved = Resolved {
                scope: "schedule",
                scope_id: "schedule".into(),
                accounts: due.into_iter().collect(),
            };
            match self.launch(tenant_id, resolved, None, "scheduled").await {
                Ok(_) => started += 1,
                Err(error) => tracing::warn!(error = %error, %tenant_id, "starting scheduled scans failed"),
            }
        }
        Ok(started)
    }

    pub async fn run(&self, tenant_id: TenantId, run_id: RunId) -> sqlx::Result<Option<(RunRow, Vec<RunAccountRow>)>> {
        let Some(run) = sqlx::query_as::<_, RunRow>(
            "SELECT run_id, tenant_id, scope, scope_id, path_prefix, trigger, status, accounts_total, started_at,
                    finished_at
               FROM scan_runs WHERE run_id = $1 AND tenant_id = $2",
        )
        .bind(run_id)
        .bind(tenant_id)
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        let accounts = sqlx::query_as::<_, RunAccountRow>(
            "SELECT account_id, status, attempts, regions, calls, errors, changed, started_at, finished_at, worker
               FROM scan_run_accounts WHERE run_id = $1 ORDER BY account_id",
        )
        .bind(run_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(Some((run, accounts)))
    }

    /// The account's last finished scan (its row in its run).
    pub async fn last_scan(
        &self,
        tenant_id: TenantId,
        account_id: &str,
    ) -> sqlx::Result<Option<(RunId, RunAccountRow)>> {
        let row: Option<(RunId,)> = sqlx::query_as(
            "SELECT run_id FROM scan_run_accounts
              WHERE tenant_id = $1 AND account_id = $2 AND status IN ('done', 'failed')
              ORDER BY finished_at DESC LIMIT 1",
        )
        .bind(tenant_id)
        .bind(account_id)
        .fetch_optional(&self.pool)
        .await?;
        let Some((run_id,)) = row else { return Ok(None) };
        let account = sqlx::query_as::<_, RunAccountRow>(
            "SELECT account_id, status, attempts, regions, calls, errors, changed, started_at, finished_at, worker
               FROM scan_run_accounts WHERE run_id = $1 AND account_id = $2",
        )
        .bind(run_id)
        .bind(account_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(Some((run_id, account)))
    }

    /// Accounts scanned in `[from, to)` (scans are metered as usage).
    pub async fn scans_between(
        &self,
        tenant_id: TenantId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> sqlx::Result<i64> {
        sqlx::query_scalar(
            "SELECT count(*) FROM scan_run_accounts
              WHERE tenant_id = $1 AND status IN ('done', 'failed') AND finished_at >= $2 AND finished_at < $3",
        )
        .bind(tenant_id)
        .bind(from)
        .bind(to)
        .fetch_one(&self.pool)
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::super::spread;

    #[test]
    fn accounts_spread_over_the_interval_and_always_the_same_way() {
        let day = chrono::Duration::hours(24);
        let offsets: Vec<i64> = (0..100)
            .map(|i| spread(&format!("1111222233{i:02}"), day).num_seconds())
            .collect();
        assert!(offsets.iter().all(|o| (0..86_400).contains(o)));
        let hours: std::collections::BTreeSet<i64> = offsets.iter().map(|o| o / 3600).collect();
        assert!(hours.len() > 15, "spread over the day: {hours:?}");
        assert_eq!(spread("111122223333", day), spread("111122223333", day));
    }
}
