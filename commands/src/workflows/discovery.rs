//! Discovery runs: read an organization with the AWS SDK as a durable job
//! (`jobs`: retried with backoff, taken over when its worker dies, one run
//! per organization at a time, shared by every worker process),
//! record what was found as one command on the CloudOrganization aggregate,
//! then disconnect the tenant's accounts that left the organization (no
//! longer listed, or closed: AWS lists a closed account as SUSPENDED), so
//! they stop counting in its coverage; and keep the run's progress row
//! (`discovery_runs`, owned here) current for `GET .../discover/{run_id}`.
//! The departures are reconciled against both aggregates' state after every
//! run, so a run that crashed before disconnecting is completed by the next.
//! Commands do not wait for it: starting a run answers at once with its id.

use super::jobs::{JobSettings, JobTask, Runner};
use crate::adapters::aws::{Discovery, DiscoveryProgress};
use crate::consistency::ReadModels;
use crate::error::CommandError;
use crate::executor::{CloudAccountsCommands, CloudOrganizationCommands, Committed, RETRIES};
use crate::metadata::CommandMetadata;
use crate::services::BillingService;
use chrono::{DateTime, Utc};
use coverwatch_domain::cloud::{
    AccountSource, AccountStatus, CloudAccountsCommand, CloudAccountsError, CloudOrganizationCommand,
    OrganizationStatus,
};
use coverwatch_domain::ids::{OrganizationId, RunId, TenantId};
use coverwatch_domain::plans::PlanCatalog;
use coverwatch_projections::cloud::queries::{all_organizations, organization};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use sqlx::types::Json;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use underway::Queue;
use underway::task::Error as TaskError;

pub struct DiscoveryWorkflow {
    pub aws: Discovery,
    pub organizations: Arc<CloudOrganizationCommands>,
    pub accounts: Arc<CloudAccountsCommands>,
    pub billing: Arc<BillingService>,
    pub catalog: Arc<PlanCatalog>,
    pub pool: PgPool,
    pub read_models: ReadModels,
    pub queue: Arc<Queue<DiscoveryTask>>,
    pub jobs: JobSettings,
}

/// One run, as a job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DiscoveryJob {
    pub run_id: RunId,
    pub tenant_id: TenantId,
    pub organization_id: OrganizationId,
    pub metadata: CommandMetadata,
}

/// The job kind: one run of an organization at a time.
pub type DiscoveryTask = JobTask<DiscoveryWorkflow>;

impl Runner for DiscoveryWorkflow {
    type Input = DiscoveryJob;

    fn lock_key(job: &DiscoveryJob) -> String {
        format!("discover:{}", job.organization_id)
    }

    fn settings(&self) -> &JobSettings {
        &self.jobs
    }

    async fn run(&self, job: DiscoveryJob) -> Result<(), TaskError> {
        let row = organization(&self.pool, job.tenant_id, job.organization_id)
            .await?
            .ok_or_else(|| TaskError::Fatal("the organization is gone".into()))?;
        let target = Target {
            tenant_id: job.tenant_id,
            organization_id: job.organization_id,
            role_arn: row.role_arn,
            external_id: row.external_id,
            external_org_id: row.external_org_id,
        };
        self.discover(target, job.run_id, job.metadata).await;
        Ok(())
    }
}

/// The organization a run reads, and how it gets in.
struct Target {
    tenant_id: TenantId,
    organization_id: OrganizationId,
    role_arn: String,
    external_id: String,
    /// The AWS organization id it was registered with (`o-...`).
    external_org_id: String,
}

/// A run as its progress row holds it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RunRow {
    pub run_id: RunId,
    /// running, done, partial or failed.
    pub status: String,
    pub pages: i64,
    pub ous: i64,
    pub accounts: i64,
    pub errors: Json<Vec<String>>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl DiscoveryWorkflow {
    /// Starts a run of the tenant's organization (which needs the plan's
    /// organization features) and returns its id; the run goes on in the
    /// background.
    pub async fn start(
        self: &Arc<Self>,
        tenant_id: TenantId,
        organization_id: OrganizationId,
        metadata: CommandMetadata,
    ) -> Result<RunId, CommandError> {
        super::organization_with_features(&self.pool, &self.billing, &self.catalog, tenant_id, organization_id).await?;
        let run_id = RunId::generate();
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO discovery_runs (run_id, organization_id, tenant_id, status, started_at)
             VALUES ($1, $2, $3, 'running', $4)",
        )
        .bind(run_id)
        .bind(organization_id)
        .bind(tenant_id)
        .bind(self.billing.clock.now())
        .execute(&mut *tx)
        .await?;
        let job = DiscoveryJob {
            run_id,
            tenant_id,
            organization_id,
            metadata,
        };
        self.queue
            .enqueue(&mut *tx, &JobTask(self.clone()), &job)
            .await
            .map_err(|error| CommandError::Unexpected(anyhow::anyhow!(error).context("enqueueing a discovery")))?;
        tx.commit().await?;
        Ok(run_id)
    }

    /// Starts the re-discoveries the schedule calls for: every organization
    /// of a tenant whose plan scans on schedule and has the organization
    /// features, past its phase point in the interval (the plan's scan
    /// interval) since its last run started (or since it was registered),
    /// and not being discovered now. One process at a time decides.
    pub async fn discover_due(self: &Arc<Self>, now: DateTime<Utc>) -> anyhow::Result<usize> {
        const LOCK: &str = "coverwatch-discovery-schedule";
        let Some(lock) = super::try_lock(&self.pool, LOCK).await? else {
            return Ok(0);
        };
        let started = self.discover_due_locked(now).await;
        super::unlock(lock, LOCK).await;
        started
    }

    async fn discover_due_locked(self: &Arc<Self>, now: DateTime<Utc>) -> anyhow::Result<usize> {
        let runs: Vec<(OrganizationId, DateTime<Utc>, bool)> = sqlx::query_as(
            "SELECT organization_id, max(started_at), bool_or(status = 'running')
               FROM discovery_runs GROUP BY organization_id",
        )
        .fetch_all(&self.pool)
        .await?;
        let runs: std::collections::BTreeMap<OrganizationId, (DateTime<Utc>, bool)> =
            runs.into_iter().map(|(id, at, running)| (id, (at, running))).collect();
        let mut started = 0;
        for (tenant_id, organization_id, registered_at) in all_organizations(&self.pool).await? {
            let reference = match runs.get(&organization_id) {
                Some((_, true)) => continue,
                Some((last, false)) => *last,
                None => registered_at,
            };
            let entitlements = self.billing.entitlements(tenant_id).await?;
            if entitlements.scan_interval_hours == 0 || !entitlements.org_features {
                continue;
            }
            let interval = chrono::Duration::hours(i64::from(entitlements.scan_interval_hours));
            if !super::due(&organization_id.to_string(), interval, reference, now) {
                continue;
            }
            match self
                .start(tenant_id, organization_id, CommandMetadata::system(tenant_id))
                .await
            {
                Ok(_) => started += 1,
                Err(error) => tracing::warn!(error = %error, %organization_id, "starting a scheduled discovery failed"),
            }
        }
        Ok(started)
    }

    async fn discover(&self, target: Target, run_id: RunId, metadata: CommandMetadata) {
        let progress = Arc::new(DiscoveryProgress::default());
        let reporter = {
            let (pool, progress) = (self.pool.clone(), progress.clone());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    let _ = report(&pool, run_id, &progress, None).await;
                }
            })
        };
        let clients = self.aws.clients(&target.role_arn, &target.external_id).await;
        let run = self
            .aws
            .discover(&clients, &target.external_org_id, progress.clone())
            .await;
        reporter.abort();
        let outcome = run.found.outcome(&run.errors);
        tracing::info!(%run_id, calls = ?run.calls, errors = run.errors.len(), "discovery read the organization");
        let command = CloudOrganizationCommand::RecordDiscovery {
            run_id,
            found: run.found,
            errors: run.errors,
        };
        let status = match self
            .organizations
            .execute_retrying(target.organization_id, command, &metadata, RETRIES)
            .await
        {
            Ok(committed) => {
                let last = match self
                    .disconnect_departures(target.tenant_id, target.organization_id, run_id)
                    .await
                {
                    Ok(Some(disconnected)) => disconnected,
                    Ok(None) => committed,
                    Err(error) => {
                        tracing::error!(error = ?error, %run_id, "disconnecting departed accounts failed (the next run retries)");
                        committed
                    }
                };
                self.read_models.settle(last).await;
                match outcome {
                    OrganizationStatus::Connected => "done",
                    OrganizationStatus::Partial => "partial",
                    OrganizationStatus::Error | OrganizationStatus::Pending => "failed",
                }
            }
            Err(error) => {
                tracing::error!(error = ?error, %run_id, "recording a discovery failed");
                progress
                    .errors
                    .lock()
                    .expect("errors lock")
                    .push("the result could not be recorded".into());
                "failed"
            }
        };
        if let Err(error) = report(&self.pool, run_id, &progress, Some(status)).await {
            tracing::error!(error = ?error, %run_id, "updating a discovery run failed");
        }
    }

    /// Disconnects the tenant's accounts connected from this organization
    /// that it no longer lists, or lists as closed (not ACTIVE): they leave
    /// its coverage (union, minimum, inherited detections) and the plan's
    /// count; they stay listed as disconnected, and the tenant may connect
    /// one again as a standalone account. Returns the last commit, if any.
    async fn disconnect_departures(
        &self,
        tenant_id: TenantId,
        organization_id: OrganizationId,
        run_id: RunId,
    ) -> Result<Option<Committed>, CommandError> {
        let organization = self.organizations.load(organization_id).await?;
        let accounts = self.accounts.load(tenant_id).await?;
        let metadata = CommandMetadata {
            causation_id: run_id.to_string(),
            ..CommandMetadata::system(tenant_id)
        };
        let mut last = None;
        for (account_id, state) in &accounts.accounts {
            let from_here = state.account.source == AccountSource::Organization(organization_id);
            let departed = organization
                .accounts
                .get(account_id.as_str())
                .is_none_or(|member| !member.connectable());
            if state.status != AccountStatus::Connected || !from_here || !departed {
                continue;
            }
            tracing::info!(%account_id, %organization_id, "the account left the organization: disconnecting it");
            let disconnect = CloudAccountsCommand::Disconnect {
                account_id: account_id.clone(),
            };
            let committed = match self
                .accounts
                .execute_retrying(tenant_id, (tenant_id, disconnect), &metadata, RETRIES)
                .await
            {
                // Disconnected meanwhile by someone else: nothing left to do.
                Err(CommandError::CloudAccounts(CloudAccountsError::Conflict(_))) => continue,
                other => other?,
            };
            let deselect = CloudOrganizationCommand::RecordMemberDisconnected {
                account_id: account_id.as_str().to_owned(),
            };
            let deselected = self
                .organizations
                .execute_retrying(organization_id, deselect, &metadata, RETRIES)
                .await?;
            last = Some(if deselected.position > 0 { deselected } else { committed });
        }
        Ok(last)
    }
}

/// Writes a run's progress (and its end, with `finished`).
async fn report(
    pool: &PgPool,
    run_id: RunId,
    progress: &DiscoveryProgress,
    finished: Option<&str>,
) -> sqlx::Result<()> {
    let errors = progress.errors();
    sqlx::query(
        "UPDATE discovery_runs SET pages = $2, ous = $3, accounts = $4, errors = $5,
                status = coalesce($6, status), finished_at = CASE WHEN $6 IS NULL THEN NULL ELSE now() END
          WHERE run_id = $1",
    )
    .bind(run_id)
    .bind(progress.pages.load(Ordering::Relaxed) as i64)
    .bind(progress.ous.load(Ordering::Relaxed) as i64)
    .bind(progress.accounts.load(Ordering::Relaxed) as i64)
    .bind(Json(errors))
    .bind(finished)
    .execute(pool)
    .await
    .map(drop)
}

const RUN_COLUMNS: &str = "run_id, status, pages, ous, accounts, errors, started_at, finished_at";

/// One run of the tenant's organization.
pub async fn run(
    pool: &PgPool,
    tenant_id: TenantId,
    organization_id: OrganizationId,
    run_id: RunId,
) -> sqlx::Result<Option<RunRow>> {
    sqlx::query_as(&format!(
        "SELECT {RUN_COLUMNS} FROM discovery_runs WHERE run_id = $1 AND organization_id = $2 AND tenant_id = $3"
    ))
    .bind(run_id)
    .bind(organization_id)
    .bind(tenant_id)
    .fetch_optional(pool)
    .await
}

/// The organization's newest run.
pub async fn latest_run(pool: &PgPool, organization_id: OrganizationId) -> sqlx::Result<Option<RunRow>> {
    sqlx::query_as(&format!(
        "SELECT {RUN_COLUMNS} FROM discovery_runs
          WHERE organization_id = $1 ORDER BY started_at DESC, run_id DESC LIMIT 1"
    ))
    .bind(organization_id)
    .fetch_optional(pool)
    .await
}
