//! Builds the application: database, migrations, command services, the
//! subscription runtime and the HTTP server. `Application::build` binds its
//! listener before returning, so tests start it on port 0 and read the port.

use crate::error::ApiError;
use crate::local_pg::LocalPostgres;
use crate::openapi::{ApiDoc, DOCUMENT};
use crate::routes::{
    admin, admin_billing, api_keys, audit, auditors, billing, cloud_accounts, cloud_organizations, coverage,
    detections, health, invitations, members, metrics, tenants,
};
use crate::settings::Settings;
use crate::state::AppState;
use crate::{idempotency, openapi};
use anyhow::Context;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::Request;
use coverwatch_commands::billing::Billing;
use coverwatch_commands::{
    CloudAccountsCommands, CloudOrganizationCommands, DetectionCommands, SubscriptionCommands, TenantCommands,
};
use coverwatch_domain::clock::{Clock, SystemClock};
use coverwatch_domain::subscription::SubscriptionServices;
use coverwatch_domain::tenant::TenantServices;
use coverwatch_projections::kafka::KafkaPublisher;
use coverwatch_projections::{Progress, SubscriptionRuntime, all_subscribers, read_models};
use secrecy::{ExposeSecret, SecretString};
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

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

pub struct Application {
    port: u16,
    publisher: Option<Arc<coverwatch_projections::kafka::PublisherMetrics>>,
    listener: Option<TcpListener>,
    router: Router,
    runtime: Option<SubscriptionRuntime>,
    billing: Arc<Billing>,
    settle_interval_ms: u64,
    wake: watch::Receiver<u64>,
    shutdown: watch::Sender<bool>,
}

/// The database URL: the configured one, else the provisioned local cluster.
pub async fn database_url(settings: &Settings) -> anyhow::Result<SecretString> {
    match &settings.database_url {
        Some(url) => Ok(url.clone()),
        None => Ok(LocalPostgres::new(&settings.local_dir, settings.local_port)?
            .ensure_running()
            .await?
            .into()),
    }
}

pub async fn connect(url: &SecretString, size: u32) -> anyhow::Result<PgPool> {
    PgPoolOptions::new()
        .max_connections(size)
        .connect(url.expose_secret())
        .await
        .context("connecting to PostgreSQL")
}

pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    MIGRATOR.run(pool).await.context("applying migrations")
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let url = database_url(&settings).await?;
        let pool = connect(&url, settings.database_pool_size).await?;
        migrate(&pool).await?;
        Self::build_with(settings, pool, Arc::new(SystemClock)).await
    }

    /// Build on an existing pool with a given clock (tests control time).
    pub async fn build_with(settings: Settings, pool: PgPool, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        let (wake_tx, wake) = watch::channel(0u64);
        let wake_tx = Arc::new(wake_tx);
        let signer = settings.audit_signer()?;
        let catalog = Arc::new(settings.plan_catalog()?);
        let stripe = settings.stripe()?;
        let tenants = Arc::new(TenantCommands::new(
            pool.clone(),
            TenantServices { clock: clock.clone() },
            wake_tx.clone(),
        ));
        let subscription_services = SubscriptionServices {
            clock: clock.clone(),
            catalog: catalog.clone(),
            gateway: stripe
                .clone()
                .map(|client| Arc::new(client) as Arc<dyn coverwatch_domain::subscription::BillingGateway>),
        };
        let billing = Arc::new(Billing {
            subscriptions: Arc::new(SubscriptionCommands::new(
                pool.clone(),
                subscription_services,
                wake_tx.clone(),
            )),
            catalog: catalog.clone(),
            stripe,
            webhook_secret: settings.stripe_webhook_secret.clone(),
            clock: clock.clone(),
            pool: pool.clone(),
        });
        let cloud_accounts = Arc::new(CloudAccountsCommands::new(
            pool.clone(),
            TenantServices { clock: clock.clone() },
            wake_tx.clone(),
        ));
        let cloud_organizations = Arc::new(CloudOrganizationCommands::new(
            pool.clone(),
            TenantServices { clock: clock.clone() },
            wake_tx.clone(),
        ));
        let detections = Arc::new(DetectionCommands::new(
            pool.clone(),
            TenantServices { clock: clock.clone() },
            wake_tx.clone(),
        ));
        let mut publisher_metrics = None;
        let runtime = if settings.subscribers {
            let watcher = Arc::new(crate::usage::ThresholdWatcher {
                billing: billing.clone(),
                tenants: tenants.clone(),
                cloud_accounts: cloud_accounts.clone(),
            });
            let mut subscribers = all_subscribers(settings.digests(signer.clone()), Some(watcher));
            subscribers.push(Arc::new(crate::derived::DerivedDetections {
                detections: detections.clone(),
                billing: billing.clone(),
                catalog: catalog.clone(),
            }));
            if let Some(kafka) = settings.kafka()? {
                let publisher = Arc::new(KafkaPublisher::new(kafka)?);
                publisher_metrics = Some(publisher.metrics.clone());
                subscribers.push(publisher);
            }
            Some(SubscriptionRuntime::new(pool.clone(), subscribers, settings.subscriber_batch_size).await?)
        } else {
            None
        };
        let progress = match &runtime {
            Some(runtime) => runtime.progress(),
            None => Progress::Database(pool.clone(), read_models().iter().map(|s| s.name()).collect()),
        };
        let _ = crate::error::UPGRADE_URL.set(format!("{}/billing/upgrade", settings.public_url.trim_end_matches('/')));
        let state = AppState {
            pool,
            tenants,
            billing: billing.clone(),
            cloud_accounts,
            cloud_organizations,
            detections,
            discovery: coverwatch_commands::aws::Discovery::new(&settings.aws()).await,
            catalog,
            rate_limiter: Arc::default(),
            progress,
            settings: Arc::new(settings.clone()),
            clock,
            signer,
            publisher: publisher_metrics.clone(),
        };
        let state_publisher = publisher_metrics;
        let listener = if settings.api {
            Some(
                TcpListener::bind(&settings.bind)
                    .await
                    .with_context(|| format!("binding {}", settings.bind))?,
            )
        } else {
            None
        };
        let port = match &listener {
            Some(listener) => listener.local_addr()?.port(),
            None => 0,
        };
        Ok(Self {
            port,
            publisher: state_publisher,
            listener,
            router: router(state),
            runtime,
            billing,
            settle_interval_ms: settings.settle_interval_ms,
            wake,
            shutdown: watch::channel(false).0,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
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
            tokio::spawn(settle_due_subscriptions(
                self.billing.clone(),
                Duration::from_millis(self.settle_interval_ms),
                self.shutdown.subscribe(),
            ));
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
        Ok(())
    }
}

/// Records period ends and grace ends as they fall due (entitlements already
/// follow the clock; this puts the transition in the log), and keeps the
/// coverage history (daily snapshots, retention).
async fn settle_due_subscriptions(billing: Arc<Billing>, every: Duration, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let now = billing.clock.now();
        if let Err(error) = billing.settle_due(now).await {
            tracing::warn!(error = ?error, "settling due subscriptions failed");
        }
        if let Err(error) = crate::coverage_history::maintain(&billing, now).await {
            tracing::warn!(error = ?error, "coverage history upkeep failed");
        }
    }
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
        .routes(routes!(cloud_accounts::disconnect_account))
        .routes(routes!(
            cloud_organizations::register_organization,
            cloud_organizations::list_organizations
        ))
        .routes(routes!(cloud_organizations::get_organization))
        .routes(routes!(cloud_organizations::role_template))
        .routes(routes!(cloud_organizations::discover))
        .routes(routes!(cloud_organizations::discovery_run))
        .routes(routes!(cloud_organizations::members))
        .routes(routes!(cloud_organizations::hierarchy))
        .routes(routes!(cloud_organizations::connect_members))
        .routes(routes!(cloud_organizations::disconnect_member))
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
    let body_limit = state.settings.max_body_bytes;
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(state.clone(), idempotency::layer))
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
