//! Builds the application: database, migrations, application services and
//! workflows, the subscription runtime and the HTTP server.
//! `Application::build` binds its listener before returning, so tests start
//! it on port 0 and read the port.

use crate::error::ApiError;
use crate::openapi::{ApiDoc, DOCUMENT};
use crate::routes::{
    admin, admin_billing, api_keys, audit, auditors, billing, cloud_accounts, cloud_organizations, coverage,
    detections, health, invitations, members, metrics, organization_members, scans, tenants,
};
use crate::settings::Settings;
use crate::state::AppState;
use crate::{idempotency, input, openapi, suspension};
use anyhow::Context;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::Request;
use coverwatch_commands::adapters::aws::Discovery;
use coverwatch_commands::adapters::aws::scan::Scanner;
use coverwatch_commands::services::{
    BillingService, CloudAccountService, CloudOrganizationService, DetectionService, TenantService,
};
use coverwatch_commands::snapshots::SnapshotKey;
use coverwatch_commands::workflows::jobs::{self, JobSettings, JobTask};
use coverwatch_commands::workflows::{
    ConnectMembers, DerivedDetections, DiscoveryWorkflow, ScanWorkflow, UsageThresholds, schedule,
};
use coverwatch_commands::{
    CloudAccountsCommands, CloudOrganizationCommands, DetectionCommands, InventoryCommands, ReadModels,
    SubscriptionCommands, TenantCommands,
};
use coverwatch_domain::clock::{Clock, SystemClock};
use coverwatch_domain::tenant::TenantServices;
use coverwatch_projections::kafka::KafkaPublisher;
use coverwatch_projections::{Progress, Subscriber, SubscriptionRuntime, all_subscribers};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::database::refuse_owning_credential;
pub use crate::database::{
    DatabaseUrls, LOCAL_SERVING_ROLE, MIGRATOR, connect, database_urls, ensure_serving_role, migrate, prepare_database,
};

pub struct Application {
    port: u16,
    /// The internal listener of `/metrics`, `/healthz` and `/readyz`, when
    /// `http.metrics_bind` is set.
    metrics: Option<(TcpListener, Router)>,
    publisher: Option<Arc<coverwatch_projections::kafka::PublisherMetrics>>,
    listener: Option<TcpListener>,
    router: Router,
    runtime: Option<SubscriptionRuntime>,
    billing: Arc<BillingService>,
    settle_interval: Duration,
    wake: watch::Receiver<u64>,
    /// The job workers this process runs (scans and discoveries).
    workers: Option<Workers>,
    /// Set when this process's upkeep loop starts scheduled scans and
    /// re-discoveries.
    scheduled: Option<Arc<schedule::Scheduled>>,
    shutdown: watch::Sender<bool>,
}

/// Production starts only with everything it must not invent.
fn refuse_incomplete_production(settings: &Settings) -> anyhow::Result<()> {
    let missing = settings.missing_for_production();
    if missing.is_empty() {
        return Ok(());
    }
    anyhow::bail!(
        "refusing to start in production without:\n  - {}",
        missing.join("\n  - ")
    )
}

/// What the job workers of this process run.
struct Workers {
    discovery: Arc<DiscoveryWorkflow>,
    scans: Arc<ScanWorkflow>,
    settings: JobSettings,
}

/// The command frameworks, one per aggregate, sharing the wake-up signal
/// in-process subscribers poll on.
struct Aggregates {
    tenants: Arc<TenantCommands>,
    subscriptions: Arc<SubscriptionCommands>,
    cloud_accounts: Arc<CloudAccountsCommands>,
    cloud_organizations: Arc<CloudOrganizationCommands>,
    detections: Arc<DetectionCommands>,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        refuse_incomplete_production(&settings)?;
        let url = prepare_database(&settings).await?;
        let pool = connect(&url, settings.database.pool_size).await?;
        Self::build_with(settings, pool, Arc::new(SystemClock)).await
    }

    /// Build on an existing pool with a given clock (tests control time).
    pub async fn build_with(settings: Settings, pool: PgPool, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        // One TLS crypto provider for the process (the job queue's
        // dependencies compile a second one; rustls cannot pick by itself).
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        refuse_incomplete_production(&settings)?;
        refuse_owning_credential(&pool, settings.production).await?;
        let (wake_tx, wake) = watch::channel(0u64);
        let wake_tx = Arc::new(wake_tx);
        let streaming_options = pool.connect_options();
        let signer = settings.audit_signer()?;
        let catalog = Arc::new(settings.plan_catalog()?);
        let stripe = settings.stripe()?;
        let services = || TenantServices { clock: clock.clone() };
        let snapshot_key = SnapshotKey::new(signer.derive_secret("aggregate-snapshots"));
        let aggregates = Aggregates {
            tenants: Arc::new(TenantCommands::new(
                pool.clone(),
                services(),
                wake_tx.clone(),
                &snapshot_key,
            )),
            subscriptions: Arc::new(SubscriptionCommands::new(
                pool.clone(),
                BillingService::aggregate_services(clock.clone(), catalog.clone(), stripe.as_ref()),
                wake_tx.clone(),
                &snapshot_key,
            )),
            cloud_accounts: Arc::new(CloudAccountsCommands::new(
                pool.clone(),
                services(),
                wake_tx.clone(),
                &snapshot_key,
            )),
            cloud_organizations: Arc::new(CloudOrganizationCommands::new(
                pool.clone(),
                services(),
                wake_tx.clone(),
                &snapshot_key,
            )),
            detections: Arc::new(DetectionCommands::new(
                pool.clone(),
                services(),
                wake_tx.clone(),
                &snapshot_key,
            )),
        };
        let billing = Arc::new(BillingService {
            subscriptions: aggregates.subscriptions.clone(),
            tenants: aggregates.tenants.clone(),
            cloud_accounts: aggregates.cloud_accounts.clone(),
            catalog: catalog.clone(),
            stripe,
            webhook_secret: settings.stripe.webhook_secret.clone(),
            clock: clock.clone(),
            pool: pool.clone(),
        });
        let mut publisher_metrics = None;
        let runtime = if settings.subscribers.enabled {
            let mut subscribers = all_subscribers(settings.digests(signer.clone()));
            subscribers.extend(workflow_subscribers(&aggregates, &billing, &catalog));
            if let Some(kafka) = settings.kafka()? {
                let publisher = Arc::new(KafkaPublisher::new(kafka)?);
                publisher_metrics = Some(publisher.metrics.clone());
                subscribers.push(publisher);
            }
            Some(SubscriptionRuntime::new(pool.clone(), subscribers, settings.subscribers.batch_size).await?)
        } else {
            None
        };
        let progress = match &runtime {
            Some(runtime) => runtime.progress(),
            None => {
                // Subscribers run elsewhere: wait on the checkpoints of the
                // ones commands wait for, as that process would.
                let awaited = all_subscribers(settings.digests(signer.clone()))
                    .into_iter()
                    .chain(workflow_subscribers(&aggregates, &billing, &catalog))
                    .filter(|s| s.awaited())
                    .map(|s| s.name())
                    .collect();
                Progress::Database(pool.clone(), awaited)
            }
        };
        let read_models = ReadModels::new(progress, settings.http.consistency_wait());
        let _ = crate::error::UPGRADE_URL.set(format!(
            "{}/billing/upgrade",
            settings.http.public_url.trim_end_matches('/')
        ));
        let aws = Discovery::new(&settings.aws()).await;
        let job_settings = settings.jobs();
        let discovery = Arc::new(DiscoveryWorkflow {
            aws: aws.clone(),
            organizations: aggregates.cloud_organizations.clone(),
            accounts: aggregates.cloud_accounts.clone(),
            billing: billing.clone(),
            catalog: catalog.clone(),
            pool: pool.clone(),
            read_models: read_models.clone(),
            queue: Arc::new(
                jobs::queue(&pool, "coverwatch-discovery")
                    .await
                    .context("the discovery queue")?,
            ),
            jobs: job_settings.clone(),
        });
        let scans = Arc::new(ScanWorkflow {
            scanner: Scanner::new(&settings.aws()).await,
            inventory: Arc::new(InventoryCommands::new(
                pool.clone(),
                services(),
                wake_tx.clone(),
                &snapshot_key,
            )),
            accounts: aggregates.cloud_accounts.clone(),
            organizations: aggregates.cloud_organizations.clone(),
            billing: billing.clone(),
            pool: pool.clone(),
            queue: Arc::new(jobs::queue(&pool, "coverwatch-scan").await.context("the scan queue")?),
            jobs: job_settings.clone(),
        });
        let workers = settings.jobs.enabled.then(|| Workers {
            discovery: discovery.clone(),
            scans: scans.clone(),
            settings: job_settings,
        });
        let scheduled = (settings.jobs.scheduled_scans).then(|| {
            Arc::new(schedule::Scheduled {
                scans: scans.clone(),
                discoveries: discovery.clone(),
            })
        });
        let state = AppState {
            pool: pool.clone(),
            tenants: Arc::new(TenantService {
                commands: aggregates.tenants.clone(),
                billing: billing.clone(),
                clock: clock.clone(),
            }),
            billing: billing.clone(),
            cloud_accounts: Arc::new(CloudAccountService {
                accounts: aggregates.cloud_accounts.clone(),
                organizations: aggregates.cloud_organizations.clone(),
                billing: billing.clone(),
                aws: aws.clone(),
            }),
            cloud_organizations: Arc::new(CloudOrganizationService {
                organizations: aggregates.cloud_organizations.clone(),
                billing: billing.clone(),
                catalog: catalog.clone(),
            }),
            detections: Arc::new(DetectionService {
                commands: aggregates.detections.clone(),
                billing: billing.clone(),
                catalog: catalog.clone(),
            }),
            discovery,
            scans,
            connect_members: Arc::new(ConnectMembers {
                aws,
                accounts: aggregates.cloud_accounts.clone(),
                organizations: aggregates.cloud_organizations.clone(),
                billing: billing.clone(),
                catalog: catalog.clone(),
                pool,
                read_models: read_models.clone(),
            }),
            catalog,
            tenant_limits: Arc::default(),
            read_models,
            settings: Arc::new(settings.clone()),
            clock,
            signer,
            publisher: publisher_metrics.clone(),
            checkpoints: Arc::default(),
            streaming: Arc::new(crate::streaming::Streaming::new(
                PgPoolOptions::new()
                    .max_connections(settings.database.streaming_pool_size.max(1))
                    .acquire_timeout(Duration::from_secs(5))
                    .connect_lazy_with((*streaming_options).clone()),
                settings.http.streams_per_tenant as usize,
                Duration::from_secs(settings.http.stream_idle_secs),
                Duration::from_secs(settings.http.stream_max_secs),
            )),
        };
        let listener = if settings.http.enabled {
            Some(
                TcpListener::bind(&settings.http.bind)
                    .await
                    .with_context(|| format!("binding {}", settings.http.bind))?,
            )
        } else {
            None
        };
        let port = match &listener {
            Some(listener) => listener.local_addr()?.port(),
            None => 0,
        };
        let metrics = match &settings.http.metrics_bind {
            Some(bind) => Some((
                TcpListener::bind(bind)
                    .await
                    .with_context(|| format!("binding the metrics listener {bind}"))?,
                internal_router(state.clone()),
            )),
            None => None,
        };
        Ok(Self {
            port,
            metrics,
            publisher: publisher_metrics,
            listener,
            router: router(state),
            runtime,
            billing,
            workers,
            scheduled,
            settle_interval: Duration::from_millis(settings.subscribers.settle_interval_ms),
            wake,
            shutdown: watch::channel(false).0,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The internal metrics listener's port, when there is one.
    pub fn metrics_port(&self) -> Option<u16> {
        self.metrics
            .as_ref()
            .and_then(|(listener, _)| listener.local_addr().ok())
            .map(|address| address.port())
    }

    /// The Kafka publisher's counters, when it runs in this process.
    pub fn publisher_metrics(&self) -> Option<Arc<coverwatch_projections::kafka::PublisherMetrics>> {
        self.publisher.clone()
    }

    /// A handle that stops the application when sent `true`.
    pub fn shutdown_handle(&self) -> watch::Sender<bool> {
        self.shutdown.clone()
    }

    /// Serve (and follow the log) until SIGINT/SIGTERM or the shutdown handle.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            let _ = shutdown.send(true);
        });
        let subscribers = self.runtime.map(|runtime| {
            let (wake, stop) = (self.wake.clone(), self.shutdown.subscribe());
            tokio::spawn(runtime.run(wake, stop))
        });
        if subscribers.is_some() {
            tokio::spawn(schedule::run(
                self.billing.clone(),
                self.scheduled.clone(),
                self.settle_interval,
                self.shutdown.subscribe(),
            ));
        }
        let workers = self.workers.map(|workers| {
            let stop = || self.shutdown.subscribe();
            [
                jobs::spawn_worker(
                    workers.discovery.queue.clone(),
                    JobTask(workers.discovery.clone()),
                    &workers.settings,
                    stop(),
                ),
                jobs::spawn_worker(
                    workers.scans.queue.clone(),
                    JobTask(workers.scans.clone()),
                    &workers.settings,
                    stop(),
                ),
            ]
        });
        if let Some((listener, router)) = self.metrics {
            let mut stop = self.shutdown.subscribe();
            tokio::spawn(async move {
                let served = axum::serve(listener, router)
                    .with_graceful_shutdown(async move {
                        let _ = stop.wait_for(|s| *s).await;
                    })
                    .await;
                if let Err(error) = served {
                    tracing::error!(error = %error, "the metrics listener stopped");
                }
            });
        }
        if let Some(listener) = self.listener {
            let mut stop = self.shutdown.subscribe();
            axum::serve(
                listener,
                self.router.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await
            .context("serving HTTP")?;
        }
        if let Some(subscribers) = subscribers {
            subscribers.await.context("subscriber runtime")?;
        }
        if let Some(workers) = workers {
            for worker in workers {
                worker.await.context("job worker")?;
            }
        }
        Ok(())
    }
}

/// The workflows that subscribe to the log (they issue commands).
fn workflow_subscribers(
    aggregates: &Aggregates,
    billing: &Arc<BillingService>,
    catalog: &Arc<coverwatch_domain::plans::PlanCatalog>,
) -> Vec<Arc<dyn Subscriber>> {
    vec![
        Arc::new(UsageThresholds {
            billing: billing.clone(),
            tenants: aggregates.tenants.clone(),
            cloud_accounts: aggregates.cloud_accounts.clone(),
        }),
        Arc::new(DerivedDetections {
            detections: aggregates.detections.clone(),
            billing: billing.clone(),
            catalog: catalog.clone(),
        }),
    ]
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// `/metrics`, `/healthz` and `/readyz` without credentials, for an
/// internal listener (the cluster's network reaches it, clients do not).
fn internal_router(state: AppState) -> Router {
    use axum::extract::State;
    use axum::routing::get;
    Router::new()
        .route(
            "/metrics",
            get(|State(state): State<AppState>| async move { metrics::exposition(&state).await }),
        )
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .fallback(not_found)
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::NotFound("route".into())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

pub fn router(state: AppState) -> Router {
    let (router, document) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(metrics::metrics))
        .routes(routes!(openapi::openapi_json))
        .routes(routes!(tenants::create_tenant))
        .routes(routes!(
            tenants::get_tenant,
            tenants::update_tenant,
            tenants::delete_tenant
        ))
        .routes(routes!(invitations::create_invitation, invitations::list_invitations))
        .routes(routes!(invitations::revoke_invitation))
        .routes(routes!(invitations::accept_invitation))
        .routes(routes!(members::list_members))
        .routes(routes!(
            members::get_member,
            members::change_role,
            members::remove_member
        ))
        .routes(routes!(members::suspend_member))
        .routes(routes!(members::reactivate_member))
        .routes(routes!(members::transfer_ownership))
        .routes(routes!(api_keys::create_api_key, api_keys::list_api_keys))
        .routes(routes!(api_keys::revoke_api_key))
        .routes(routes!(audit::audit_log))
        .routes(routes!(auditors::export_audit_log))
        .routes(routes!(auditors::events))
        .routes(routes!(auditors::state_as_of))
        .routes(routes!(auditors::verify))
        .routes(routes!(auditors::public_key))
        .routes(routes!(billing::list_plans))
        .routes(routes!(billing::get_subscription))
        .routes(routes!(billing::checkout))
        .routes(routes!(billing::portal))
        .routes(routes!(billing::change_plan))
        .routes(routes!(billing::cancel))
        .routes(routes!(billing::reactivate))
        .routes(routes!(billing::list_invoices))
        .routes(routes!(billing::usage))
        .routes(routes!(billing::stripe_webhook))
        .routes(routes!(cloud_accounts::connect_account, cloud_accounts::list_accounts))
        .routes(routes!(cloud_accounts::get_account))
        .routes(routes!(cloud_accounts::disconnect_account))
        .routes(routes!(scans::scan_account))
        .routes(routes!(scans::scan_organization))
        .routes(routes!(scans::get_run))
        .routes(routes!(scans::get_inventory))
        .routes(routes!(scans::set_account_regions))
        .routes(routes!(scans::set_organization_regions))
        .routes(routes!(
            cloud_organizations::register_organization,
            cloud_organizations::list_organizations
        ))
        .routes(routes!(cloud_organizations::get_organization))
        .routes(routes!(cloud_organizations::role_template))
        .routes(routes!(cloud_organizations::discover))
        .routes(routes!(cloud_organizations::discovery_run))
        .routes(routes!(organization_members::members))
        .routes(routes!(organization_members::hierarchy))
        .routes(routes!(organization_members::connect_members))
        .routes(routes!(organization_members::disconnect_member))
        .routes(routes!(detections::register, detections::list))
        .routes(routes!(detections::get, detections::change, detections::retire))
        .routes(routes!(detections::disable))
        .routes(routes!(detections::enable))
        .routes(routes!(coverage::account))
        .routes(routes!(coverage::account_layer))
        .routes(routes!(coverage::organization))
        .routes(routes!(coverage::snapshots))
        .routes(routes!(coverage::account_snapshots))
        .routes(routes!(coverage::organization_layer))
        .routes(routes!(admin_billing::list_subscriptions))
        .routes(routes!(admin_billing::mrr))
        .routes(routes!(admin_billing::put_overrides))
        .routes(routes!(admin_billing::grant_grace))
        .routes(routes!(admin_billing::legacy_migration))
        .routes(routes!(admin_billing::unmatched_events))
        .routes(routes!(admin::list_tenants))
        .routes(routes!(admin::suspend_tenant))
        .routes(routes!(admin::reactivate_tenant))
        .split_for_parts();
    let _ = DOCUMENT.set(document);
    let body_limit = state.settings.http.max_body_bytes;
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(state.clone(), idempotency::layer))
        .layer(axum::middleware::from_fn_with_state(state.clone(), suspension::layer))
        .layer(axum::middleware::from_fn_with_state(state.clone(), input::layer))
        .layer(axum::middleware::from_fn(crate::rate_limit::headers))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(TraceLayer::new_for_http().make_span_with(|request: &Request<_>| {
            let request_id = request
                .headers()
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            tracing::info_span!("request", method = %request.method(), uri = %request.uri(), request_id = %request_id)
        }))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .with_state(state)
}
