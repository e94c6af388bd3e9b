//! `coverwatch bench-discovery`: one full discovery of an organization (the
//! hierarchy, delegated administrators, SCPs, trails and aggregators) at a
//! given pace, timed, with the calls it made per operation, as JSON. The
//! benchmark `make bench-discovery` builds the organization in moto, runs
//! this beside a plain boto3 walk and prints the ratio
//! (`tests/tools/bench_discovery.py`).

use coverwatch_commands::adapters::aws::{AwsSettings, Discovery, DiscoveryProgress};
use serde_json::json;
use std::sync::Arc;
use std::time::Instant;

pub async fn run(endpoint: &str, organization_id: &str, requests_per_second: f64) -> anyhow::Result<()> {
    let discovery = Discovery::new(&AwsSettings {
        endpoint_url: Some(endpoint.to_owned()),
        access_key: Some(("testing".into(), "testing".into())),
        requests_per_second,
        ..AwsSettings::default()
    })
    .await;
    let clients = discovery
        .clients("arn:aws:iam::123456789012:role/CoverwatchAudit", "coverwatch-bench")
        .await;
    let started = Instant::now();
    let run = discovery
        .discover(&clients, organization_id, Arc::new(DiscoveryProgress::default()))
        .await;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({
            "seconds": seconds,
            "ous": run.found.hierarchy.ous.len(),
            "accounts": run.found.hierarchy.accounts.len(),
            "sources": run.found.sources.len(),
            "errors": run.errors,
            "calls": run.calls,
            "requests_per_second": requests_per_second,
        })
    );
    anyhow::ensure!(run.errors.is_empty(), "the discovery had errors");
    Ok(())
}
