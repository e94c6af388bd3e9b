//! Discovery runs in the background: walk the organization with the AWS
//! SDK, record what was found as events, and keep the run's progress row
//! current for `GET .../discover/{run_id}`.

use crate::state::AppState;
use coverwatch_commands::CommandMetadata;
use coverwatch_commands::aws::DiscoveryProgress;
use coverwatch_domain::cloud::CloudOrganizationCommand;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use uuid::Uuid;

pub async fn run(
    state: AppState,
    org_id: Uuid,
    run_id: Uuid,
    role_arn: String,
    external_id: String,
    metadata: CommandMetadata,
) {
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
    let client = state.discovery.client(&role_arn, &external_id).await;
    let hierarchy = state.discovery.hierarchy(&client, progress.clone()).await;
    reporter.abort();
    let errors = progress.errors.lock().expect("errors lock").clone();
    let command = CloudOrganizationCommand::RecordDiscovery {
        run_id,
        hierarchy: hierarchy.clone(),
        errors: errors.clone(),
    };
    let status = match state
        .cloud_organizations
        .execute_retrying(org_id, command, &metadata, coverwatch_commands::billing::RETRIES)
        .await
    {
        Ok(committed) => {
            state.settle(committed).await;
            match (
                errors.is_empty(),
                hierarchy.ous.is_empty() && hierarchy.accounts.is_empty(),
            ) {
                (true, _) => "done",
                (false, false) => "partial",
                (false, true) => "failed",
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
    let errors = progress.errors.lock().expect("errors lock").clone();
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
