//! Discovery runs in the background: read the organization with the AWS
//! SDK, record what was found as events, and keep the run's progress row
//! current for `GET .../discover/{run_id}`.

use crate::state::AppState;
use coverwatch_commands::CommandMetadata;
use coverwatch_commands::aws::DiscoveryProgress;
use coverwatch_domain::cloud::{CloudOrganizationCommand, OrganizationStatus};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use uuid::Uuid;

/// The organization a run reads, and how it gets in.
pub struct Target {
    pub org_id: Uuid,
    pub role_arn: String,
    pub external_id: String,
    /// The AWS organization id it was registered with (`o-...`).
    pub external_org_id: String,
}

pub async fn run(state: AppState, target: Target, run_id: Uuid, metadata: CommandMetadata) {
    let org_id = target.org_id;
    let progress = Arc::new(DiscoveryProgress::default());
    let reporter = {
        let (state, progress) = (state.clone(), progress.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let _ = report(&state, run_id, &progress, None).await;
            }
        })
    };
    let clients = state.discovery.clients(&target.role_arn, &target.external_id).await;
    let run = state
        .discovery
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
    let status = match state
        .cloud_organizations
        .execute_retrying(org_id, command, &metadata, coverwatch_commands::billing::RETRIES)
        .await
    {
        Ok(committed) => {
            state.settle(committed).await;
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
    if let Err(error) = report(&state, run_id, &progress, Some(status)).await {
        tracing::error!(error = ?error, %run_id, "updating a discovery run failed");
    }
}

async fn report(
    state: &AppState,
    run_id: Uuid,
    progress: &DiscoveryProgress,
    finished: Option<&str>,
) -> Result<(), sqlx::Error> {
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
    .bind(sqlx::types::Json(errors))
    .bind(finished)
    .execute(&state.pool)
    .await
    .map(drop)
}
