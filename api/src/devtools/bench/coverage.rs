//! `coverwatch bench-coverage`: the coverage projection at scale. One
//! organization of 1,000 connected accounts in 30 OUs and 10,000 detections
//! (97 % account-scoped with 2–6 cloud techniques each, 3 % organization-
//! scoped: two thirds for every account, one third for 50 accounts) written
//! through the aggregates; then, printed: the projection rebuilt from
//! position 0, one new organization detection applied to all accounts
//! (command commit until the coverage read model has it, and the
//! projection's handler alone), and p50/p99 of the organization coverage
//! query over HTTP.

use super::{coverage_position, fresh_database, serve};
use crate::devtools::local_pg::LocalPostgres;
use crate::settings::Settings;
use anyhow::Context;
use coverwatch_commands::snapshots::SnapshotKey;
use coverwatch_commands::{CloudAccountsCommands, CloudOrganizationCommands, CommandMetadata, DetectionCommands};
use coverwatch_domain::attack::{self, Confidence, PlatformSet, TechniqueId};
use coverwatch_domain::cloud::hierarchy::{DiscoveredAccount, DiscoveredHierarchy, DiscoveredOu};
use coverwatch_domain::cloud::sources::Discovered;
use coverwatch_domain::cloud::values::{AwsAccountId, Environment, Provider, Region, RoleArn};
use coverwatch_domain::cloud::{AccountSource, CloudAccountsCommand, CloudOrganizationCommand, NewAccount};
use coverwatch_domain::detection::{DetectionCommand, DetectionScope, DetectionSource, Techniques};
use coverwatch_domain::ids::{DetectionId, OrganizationId, RunId, TenantId};
use coverwatch_domain::plans::{Limit, Tier};
use coverwatch_domain::tenant::TenantServices;
use coverwatch_domain::values::Name;
use coverwatch_projections::Subscriber;
use coverwatch_projections::coverage::Coverage;
use serde_json::{Value, json};
use sqlx::PgPool;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A small deterministic generator: the same data on every run.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) as usize) % below
    }
}

async fn caught_up(pool: &PgPool, position: i64) -> anyhow::Result<()> {
    while coverage_position(pool).await? < position {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

pub async fn run(settings: Settings, accounts: usize, detections: usize, queries: usize) -> anyhow::Result<()> {
    let local = LocalPostgres::new(&settings.local.dir, settings.local.port)?;
    let (pool, url) = fresh_database(&local, "coverwatch_bench_coverage", 24).await?;
    let mut app_settings = settings.clone();
    app_settings.http.bind = "127.0.0.1:0".into();
    app_settings.http.rate_limits = false;
    app_settings.database.url = Some(url);
    app_settings.database.pool_size = 24;
    let (base, stop, server) = serve(app_settings, &pool).await?;
    let http = reqwest::Client::new();
    let signup: Value = http
        .post(format!("{base}/v1/tenants"))
        .json(&json!({"name": "Coverage bench", "slug": "coverage-bench", "owner_email": "owner@bench.test"}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let tenant_id: TenantId = signup["id"].as_str().context("tenant id")?.parse()?;
    let key = signup["api_key"].as_str().context("api key")?.to_owned();

    // Written through the aggregates directly (the HTTP command path is
    // measured by `coverwatch bench`); the server's subscribers project them.
    let (wake, _) = tokio::sync::watch::channel(0u64);
    let wake = Arc::new(wake);
    let services = || TenantServices::default();
    let sealing = SnapshotKey::new(settings.audit_signer()?.derive_secret("aggregate-snapshots"));
    let organizations = CloudOrganizationCommands::new(pool.clone(), services(), wake.clone(), &sealing);
    let cloud_accounts = CloudAccountsCommands::new(pool.clone(), services(), wake.clone(), &sealing);
    let detection_commands = Arc::new(DetectionCommands::new(pool.clone(), services(), wake.clone(), &sealing));
    let metadata = CommandMetadata::system(tenant_id);
    let org_id = OrganizationId::generate();
    organizations
        .execute(
            org_id,
            CloudOrganizationCommand::Register {
                organization_id: org_id,
                tenant_id,
                provider: Provider::Aws,
                external_org_id: "o-benchmark01".into(),
                management_account_id: AwsAccountId::parse("123456789012").map_err(anyhow::Error::msg)?,
                role_arn: RoleArn::parse("arn:aws:iam::123456789012:role/CoverwatchAudit")
                    .map_err(anyhow::Error::msg)?,
                external_id: format!("coverwatch-{tenant_id}"),
                name: Name::parse("Benchmark").map_err(anyhow::Error::msg)?,
                member_role_name: "CoverwatchAudit".into(),
                org_features: true,
                cheapest_with_org_features: Tier::Pro,
            },
            &metadata,
        )
        .await?;
    let mut ous: Vec<DiscoveredOu> = vec![];
    for i in 0..30 {
        let (parent_id, mut names, mut ids) = if i >= 10 {
            let parent = &ous[i % 10];
            (parent.id.clone(), parent.path_names.clone(), parent.path_ids.clone())
        } else {
            ("r-root".to_owned(), vec!["Root".to_owned()], vec!["r-root".to_owned()])
        };
        let id = format!("ou-root-{i:08}");
        names.push(format!("OU{i:02}"));
        ids.push(id.clone());
        ous.push(DiscoveredOu {
            id,
            name: format!("OU{i:02}"),
            parent_id,
            path_names: names,
            path_ids: ids,
        });
    }
    let account_ids: Vec<String> = (0..accounts)
        .map(|i| format!("{:012}", 200_000_000_000u64 + i as u64))
        .collect();
    let members = account_ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let ou = &ous[i % ous.len()];
            DiscoveredAccount {
                id: id.clone(),
                name: format!("account-{i}"),
                email: format!("a{i}@bench.test"),
                status: "ACTIVE".into(),
                parent_id: ou.id.clone(),
                path_names: ou.path_names.clone(),
                path_ids: ou.path_ids.clone(),
            }
        })
        .collect();
    let found = Discovered {
        hierarchy: DiscoveredHierarchy {
            root_id: "r-root".into(),
            ous: ous.clone(),
            accounts: members,
        },
        ..Discovered::default()
    };
    organizations
        .execute(
            org_id,
            CloudOrganizationCommand::RecordDiscovery {
                run_id: RunId::generate(),
                found,
                errors: vec![],
            },
            &metadata,
        )
        .await?;
    let started = Instant::now();
    for id in &account_ids {
        let account = NewAccount {
            account_id: AwsAccountId::parse(id).map_err(anyhow::Error::msg)?,
            alias: None,
            region: Region::parse("us-east-1").map_err(anyhow::Error::msg)?,
            role_arn: RoleArn::parse(&format!("arn:aws:iam::{id}:role/CoverwatchAudit")).map_err(anyhow::Error::msg)?,
            environment: Environment::Production,
            source: AccountSource::Organization(org_id),
        };
        let command = CloudAccountsCommand::Connect {
            account,
            max_accounts: Limit::Unlimited,
        };
        cloud_accounts
            .execute(tenant_id, (tenant_id, command), &metadata)
            .await?;
    }
    println!(
        "setup: {accounts} accounts connected in {:.1}s",
        started.elapsed().as_secs_f64()
    );

    let cloud: Vec<TechniqueId> = attack::latest()
        .denominator(&PlatformSet::cloud())
        .into_iter()
        .cloned()
        .collect();
    let started = Instant::now();
    let org_scoped = detections * 3 / 100;
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..8usize {
        let (commands, account_ids, cloud) = (detection_commands.clone(), account_ids.clone(), cloud.clone());
        tasks.spawn(async move {
            let mut rng = Lcg(worker as u64 + 1);
            let metadata = CommandMetadata::system(tenant_id);
            let mut last = 0;
            for n in (worker..detections).step_by(8) {
                let mut techniques = Techniques::new();
                for _ in 0..(2 + rng.next(5)) {
                    let confidence = [0.3, 0.5, 0.6, 0.7, 0.9][rng.next(5)];
                    techniques.insert(
                        cloud[rng.next(cloud.len())].clone(),
                        Confidence::parse(confidence).expect("in range"),
                    );
                }
                let scope = if n < org_scoped {
                    let accounts = (n % 3 == 2).then(|| {
                        (0..50)
                            .map(|_| AwsAccountId::parse(&account_ids[rng.next(account_ids.len())]).expect("valid"))
                            .collect()
                    });
                    DetectionScope::Organization {
                        organization_id: org_id,
                        accounts,
                    }
                } else {
                    DetectionScope::Account {
                        account_id: AwsAccountId::parse(&account_ids[rng.next(account_ids.len())]).expect("valid"),
                    }
                };
                let detection_id = DetectionId::generate();
                let command = DetectionCommand::Register {
                    detection_id,
                    tenant_id,
                    name: Name::parse(&format!("Detection {n}")).expect("valid"),
                    source: DetectionSource::Custom,
                    techniques,
                    scope,
                    attack_version: attack::latest().attack_version.clone(),
                    derived_from: None,
                    org_features: true,
                    cheapest_with_org_features: Tier::Pro,
                };
                last = commands.execute(detection_id, command, &metadata).await?.position;
            }
            anyhow::Ok(last)
        });
    }
    let mut last = 0;
    while let Some(done) = tasks.join_next().await {
        last = last.max(done??);
    }
    caught_up(&pool, last).await?;
    println!(
        "setup: {detections} detections ({org_scoped} organization-scoped) registered and projected in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&pool)
        .await?;

    println!("== build from position 0 (coverage projection alone, {events} events in the log)");
    let summary = coverwatch_replay::rebuild::rebuild(
        &pool,
        vec![Arc::new(Coverage) as Arc<dyn Subscriber>],
        10_000,
        &mut |_| {},
    )
    .await?;
    println!(
        "rebuild: {:.2}s, {:.0} events/s",
        summary.seconds, summary.events_per_second
    );

    println!("== one organization detection for all {accounts} accounts");
    let mut end_to_end = vec![];
    let mut handler = vec![];
    for round in 0..5 {
        let detection_id = DetectionId::generate();
        let mut techniques = Techniques::new();
        for t in cloud.iter().skip(round * 7).take(5) {
            techniques.insert(t.clone(), Confidence::parse(0.9).expect("in range"));
        }
        let command = DetectionCommand::Register {
            detection_id,
            tenant_id,
            name: Name::parse(&format!("Organization detection {round}")).expect("valid"),
            source: DetectionSource::Guardduty,
            techniques: techniques.clone(),
            scope: DetectionScope::Organization {
                organization_id: org_id,
                accounts: None,
            },
            attack_version: attack::latest().attack_version.clone(),
            derived_from: None,
            org_features: true,
            cheapest_with_org_features: Tier::Pro,
        };
        let started = Instant::now();
        let committed = detection_commands.execute(detection_id, command, &metadata).await?;
        caught_up(&pool, committed.position).await?;
        end_to_end.push(started.elapsed().as_secs_f64() * 1000.0);
        // The handler alone, on a copy of that event with another detection
        // id, rolled back.
        let mut event: coverwatch_projections::StoredEvent = sqlx::query_as(
            "SELECT position, event_id, aggregate_type, aggregate_id, sequence, event_type, event_version,
                    recorded_at, tenant_id, payload, metadata, prev_hash, hash
               FROM events WHERE position = $1",
        )
        .bind(committed.position)
        .fetch_one(&pool)
        .await?;
        let other = DetectionId::generate();
        event.aggregate_id = other.to_string();
        event.payload["DetectionRegistered"]["detection_id"] = json!(other);
        let mut tx = pool.begin().await?;
        let started = Instant::now();
        Coverage.handle(&mut tx, std::slice::from_ref(&event)).await?;
        handler.push(started.elapsed().as_secs_f64() * 1000.0);
        tx.rollback().await?;
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "commit until projected: median {:.1} ms of {:?}; projection handler alone: median {:.1} ms of {:?} (target < 100 ms)",
        median(&mut end_to_end.clone()),
        end_to_end.iter().map(|v| v.round()).collect::<Vec<_>>(),
        median(&mut handler.clone()),
        handler.iter().map(|v| v.round()).collect::<Vec<_>>()
    );

    println!("== GET /v1/tenants/{{id}}/coverage/organizations/{{org}} x {queries} (sequential, after 20 warm-ups)");
    let url = format!("{base}/v1/tenants/{tenant_id}/coverage/organizations/{org_id}");
    let mut latencies = vec![];
    for i in 0..queries + 20 {
        let started = Instant::now();
        let body: Value = http
            .get(&url)
            .bearer_auth(&key)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        if i >= 20 {
            latencies.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        anyhow::ensure!(
            body["accounts"].as_array().map(Vec::len) == Some(accounts),
            "all accounts are listed"
        );
    }
    latencies.sort_by(f64::total_cmp);
    println!(
        "organization coverage query: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (target p99 < 20 ms)",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or_default()
    );
    let _ = stop.send(true);
    let _ = server.await;
    Ok(())
}
