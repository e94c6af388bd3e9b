//! `spawn_app()`: a fresh database from the migrated template and the real
//! application on port 0, plus small HTTP helpers.

use coverwatch_api::Settings;
use coverwatch_api::devtools::local_pg::LocalPostgres;
use coverwatch_api::startup::{Application, MIGRATOR};
use coverwatch_domain::clock::{Clock, ManualClock, SystemClock};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sqlx::{Connection, PgConnection, PgPool};
use std::path::PathBuf;
use std::sync::Arc;
use uuid::Uuid;

pub const ADMIN_TOKEN: &str = "test-platform-admin-token";
/// The audit signing seed every test server uses (hex of 32 bytes).
pub const SIGNING_KEY: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";

pub fn test_public_key() -> String {
    coverwatch_projections::signing::AuditSigner::from_hex(SIGNING_KEY)
        .unwrap()
        .public_key_hex()
}
const TEMPLATE: &str = "coverwatch_template";

pub struct TestApp {
    pub address: String,
    pub pool: PgPool,
    pub database_url: String,
    pub http: reqwest::Client,
    pub stop: tokio::sync::watch::Sender<bool>,
}

/// A tenant created through the API, with its owner's key.
#[derive(Debug, Clone)]
pub struct TestTenant {
    pub id: String,
    pub slug: String,
    pub owner_member_id: String,
    pub key: String,
}

pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn cluster() -> LocalPostgres {
    LocalPostgres::new(&workspace_root().join(".coverwatch"), 54329).unwrap()
}

/// The cluster's admin URL: `COVERWATCH_TEST_DATABASE_URL` (a server, any
/// database), else the local cluster `make test` prepares.
async fn server_url(database: &str) -> String {
    if let Ok(url) = std::env::var("COVERWATCH_TEST_DATABASE_URL") {
        let base = url.rsplit_once('/').map(|(b, _)| b.to_owned()).unwrap_or(url);
        return format!("{base}/{database}");
    }
    let local = cluster();
    if PgConnection::connect(&local.url("postgres")).await.is_err() {
        local
            .ensure_running()
            .await
            .expect("the local PostgreSQL cluster starts");
    }
    local.url(database)
}

/// The login role the servers under test use: `coverwatch_app`'s grants
/// and nothing else, as in production (the tests' own pool is the owner's).
pub const SERVING_ROLE: &str = coverwatch_api::startup::LOCAL_SERVING_ROLE;

/// `url` with the serving role as its user (the cluster trusts local logins).
pub fn serving_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    format!("{scheme}://{SERVING_ROLE}@{host}")
}

fn migrations_fingerprint() -> String {
    let mut hasher = Sha256::new();
    for migration in MIGRATOR.iter() {
        hasher.update(migration.version.to_le_bytes());
        hasher.update(&*migration.checksum);
    }
    hex::encode(hasher.finalize())
}

/// Create (or refresh, when migrations changed) the migrated template.
async fn ensure_template(admin: &mut PgConnection) {
    sqlx::query("SELECT pg_advisory_lock(72430001)")
        .execute(&mut *admin)
        .await
        .unwrap();
    let fingerprint = migrations_fingerprint();
    let current: Option<Option<String>> =
        sqlx::query_scalar("SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = $1")
            .bind(TEMPLATE)
            .fetch_optional(&mut *admin)
            .await
            .unwrap();
    if current.flatten().as_deref() != Some(fingerprint.as_str()) {
        sqlx::query(&format!("DROP DATABASE IF EXISTS {TEMPLATE} WITH (FORCE)"))
            .execute(&mut *admin)
            .await
            .unwrap();
        sqlx::query(&format!("CREATE DATABASE {TEMPLATE}"))
            .execute(&mut *admin)
            .await
            .unwrap();
        let pool = PgPool::connect(&server_url(TEMPLATE).await).await.unwrap();
        coverwatch_api::startup::migrate(&pool)
            .await
            .expect("migrations apply to the template");
        coverwatch_api::startup::ensure_serving_role(&pool, SERVING_ROLE)
            .await
            .expect("the serving role exists");
        pool.close().await;
        sqlx::query(&format!("COMMENT ON DATABASE {TEMPLATE} IS '{fingerprint}'"))
            .execute(&mut *admin)
            .await
            .unwrap();
    }
    sqlx::query("SELECT pg_advisory_unlock(72430001)")
        .execute(&mut *admin)
        .await
        .unwrap();
}

/// A new, migrated database of its own; returns its URL.
pub async fn fresh_database() -> String {
    let mut admin = PgConnection::connect(&server_url("postgres").await).await.unwrap();
    ensure_template(&mut admin).await;
    let name = format!("test_{}", Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE DATABASE {name} TEMPLATE {TEMPLATE}"))
        .execute(&mut admin)
        .await
        .unwrap();
    admin.close().await.unwrap();
    server_url(&name).await
}

/// A moto server shared by every test of this run (and the next), for the
/// STS calls any test makes in passing (connecting a standalone account
/// assumes its role first): started detached on a fixed port by the first
/// test that needs it. Tests about AWS itself start their own moto.
pub fn shared_moto() -> String {
    let port: u16 = std::env::var("COVERWATCH_TEST_MOTO_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(54331);
    let url = format!("http://127.0.0.1:{port}");
    let up = || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
    if !up() {
        use std::os::unix::process::CommandExt;
        // Two tests may race to start it: the loser's server cannot bind and
        // exits. The winner outlives the test (like the database cluster).
        #[expect(clippy::zombie_processes, reason = "the shared server outlives every test process")]
        let _server = std::process::Command::new(python())
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .process_group(0)
            .spawn()
            .expect("moto starts (make test installs it into .coverwatch/venv)");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !up() {
            assert!(std::time::Instant::now() < deadline, "the shared moto did not start");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
    url
}

pub fn test_settings(database_url: &str) -> Settings {
    let mut settings = Settings::defaults();
    settings.aws.endpoint_url = Some(shared_moto());
    settings.aws.access_key_id = Some("testing".into());
    settings.aws.secret_access_key = Some("testing".to_owned().into());
    // Scans start on demand in tests; the schedule's own test turns it on.
    settings.jobs.scheduled_scans = false;
    settings.jobs.poll_ms = 500;
    settings.http.bind = "127.0.0.1:0".into();
    settings.database.url = Some(serving_url(database_url).into());
    settings.database.owner_url = Some(database_url.to_owned().into());
    settings.http.admin_token = Some(ADMIN_TOKEN.to_owned().into());
    settings.database.pool_size = 10;
    settings.audit.signing_key = Some(SIGNING_KEY.to_owned().into());
    // A signed checkpoint after every batch, so every test's events are covered.
    settings.audit.checkpoint_every = 1;
    settings
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(Arc::new(SystemClock), |_| {}).await
}

pub async fn spawn_app_with_clock(clock: ManualClock) -> TestApp {
    spawn_app_with(Arc::new(clock), |_| {}).await
}

pub async fn spawn_app_with(clock: Arc<dyn Clock>, configure: impl FnOnce(&mut Settings)) -> TestApp {
    spawn_app_on(fresh_database().await, clock, configure).await
}

/// The application on an existing database (one another process used).
pub async fn spawn_app_on(
    database_url: String,
    clock: Arc<dyn Clock>,
    configure: impl FnOnce(&mut Settings),
) -> TestApp {
    coverwatch_api::telemetry::init("pretty");
    let mut settings = test_settings(&database_url);
    configure(&mut settings);
    let pool = PgPool::connect(&database_url).await.unwrap();
    serve(settings, pool, database_url, clock).await
}

/// Builds the application (serving as the serving role, whatever `pool`,
/// the test's own, is) and serves it on port 0.
async fn serve(settings: Settings, pool: PgPool, database_url: String, clock: Arc<dyn Clock>) -> TestApp {
    use secrecy::ExposeSecret;
    let serving = settings
        .database
        .url
        .as_ref()
        .expect("a serving URL")
        .expose_secret()
        .to_owned();
    let serving_pool = PgPool::connect(&serving).await.expect("the serving role connects");
    let app = Application::build_with(settings, serving_pool, clock)
        .await
        .expect("the application builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    let stop = app.shutdown_handle();
    tokio::spawn(app.run_until_stopped());
    TestApp {
        address,
        pool,
        database_url,
        http: reqwest::Client::new(),
        stop,
    }
}

impl TestApp {
    pub fn request(&self, method: Method, path: &str, key: Option<&str>) -> RequestBuilder {
        let builder = self.http.request(method, format!("{}{path}", self.address));
        match key {
            Some(key) => builder.bearer_auth(key),
            None => builder,
        }
    }

    pub async fn get(&self, path: &str, key: &str) -> Response {
        self.request(Method::GET, path, Some(key)).send().await.unwrap()
    }

    pub async fn post(&self, path: &str, key: &str, body: Value) -> Response {
        self.request(Method::POST, path, Some(key))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    pub async fn patch(&self, path: &str, key: &str, body: Value) -> Response {
        self.request(Method::PATCH, path, Some(key))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    pub async fn delete(&self, path: &str, key: &str) -> Response {
        self.request(Method::DELETE, path, Some(key)).send().await.unwrap()
    }

    /// A tenant whose plan limits stay out of the way (an admin override of
    /// the member limit and the API rate): for tests about everything else.
    pub async fn create_tenant(&self, slug: &str) -> TestTenant {
        let tenant = self.create_free_tenant(slug).await;
        self.set_overrides(
            &tenant,
            json!({"max_members": "unlimited", "api_rate_per_minute": 1_000_000}),
        )
        .await;
        tenant
    }

    /// The platform admin's per-tenant plan overrides.
    pub async fn set_overrides(&self, tenant: &TestTenant, overrides: Value) -> Value {
        let response = self
            .request(
                Method::PUT,
                &format!("/v1/admin/tenants/{}/overrides", tenant.id),
                Some(ADMIN_TOKEN),
            )
            .json(&overrides)
            .send()
            .await
            .unwrap();
        expect_status(response, StatusCode::OK).await
    }

    /// A tenant on the FREE plan as sign-up leaves it.
    pub async fn create_free_tenant(&self, slug: &str) -> TestTenant {
        let response = self
            .request(Method::POST, "/v1/tenants", None)
            .json(&json!({"name": format!("Tenant {slug}"), "slug": slug, "owner_email": format!("owner@{slug}.test")}))
            .send()
            .await
            .unwrap();
        let body = expect_status(response, StatusCode::CREATED).await;
        TestTenant {
            id: body["id"].as_str().unwrap().to_owned(),
            slug: slug.to_owned(),
            owner_member_id: body["owner_member_id"].as_str().unwrap().to_owned(),
            key: body["api_key"].as_str().unwrap().to_owned(),
        }
    }

    /// Invite `email` with `role` and accept: returns (member id, api key).
    pub async fn add_member(&self, tenant: &TestTenant, email: &str, role: &str) -> (String, String) {
        let invitation = expect_status(
            self.post(
                &format!("/v1/tenants/{}/invitations", tenant.id),
                &tenant.key,
                json!({"email": email, "role": role}),
            )
            .await,
            StatusCode::CREATED,
        )
        .await;
        let accepted = expect_status(self.accept_invitation(&invitation["token"]).await, StatusCode::CREATED).await;
        (
            accepted["member_id"].as_str().unwrap().to_owned(),
            accepted["api_key"].as_str().unwrap().to_owned(),
        )
    }

    pub async fn event_count(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM events")
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }
}

/// Assert the status (showing the body when it differs) and return the JSON body.
pub async fn expect_status(response: Response, status: StatusCode) -> Value {
    let actual = response.status();
    let text = response.text().await.unwrap();
    assert_eq!(actual, status, "unexpected status; body: {text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

/// Assert a problem+json response with the given status and type suffix.
pub async fn expect_problem(response: Response, status: StatusCode, kind: &str) -> Value {
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = expect_status(response, status).await;
    assert_eq!(content_type, "application/problem+json", "body: {body}");
    assert_eq!(
        body["type"],
        format!("https://coverwatch.dev/problems/{kind}"),
        "body: {body}"
    );
    assert_eq!(body["status"], status.as_u16(), "body: {body}");
    assert!(body["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(body["detail"].as_str().is_some_and(|t| !t.is_empty()));
    body
}

impl TestApp {
    /// Another API process on the same database (serving only: the first
    /// one runs the subscribers), as a second replica would.
    pub async fn another_api_process(&self, clock: Arc<dyn Clock>, configure: impl FnOnce(&mut Settings)) -> TestApp {
        let mut settings = test_settings(&self.database_url);
        settings.subscribers.enabled = false;
        configure(&mut settings);
        serve(settings, self.pool.clone(), self.database_url.clone(), clock).await
    }

    /// A cheap handle for spawned tasks (same server, same pool).
    pub fn clone_client(&self) -> TestApp {
        TestApp {
            address: self.address.clone(),
            pool: self.pool.clone(),
            database_url: self.database_url.clone(),
            http: self.http.clone(),
            stop: self.stop.clone(),
        }
    }

    pub async fn create_tenant_owned(&self, slug: String) -> TestTenant {
        self.create_tenant(&slug).await
    }
}

impl TestApp {
    /// Wait until the named subscriber (every subscriber when `None`) has
    /// processed the whole log.
    pub async fn caught_up(&self, subscriber: Option<&str>, timeout: std::time::Duration) {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let (behind, known): (i64, i64) = sqlx::query_as(
                "SELECT count(*) FILTER (WHERE position < (SELECT coalesce(max(position), 0) FROM events)), count(*)
                   FROM subscriber_checkpoints WHERE $1::text IS NULL OR name = $1",
            )
            .bind(subscriber)
            .fetch_one(&self.pool)
            .await
            .unwrap();
            if behind == 0 && known > 0 {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "{subscriber:?} did not catch up");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

impl TestApp {
    /// `POST /v1/invitations/accept` with `token` (no credentials needed).
    pub async fn accept_invitation(&self, token: &Value) -> Response {
        self.request(Method::POST, "/v1/invitations/accept", None)
            .json(&json!({"token": token}))
            .send()
            .await
            .unwrap()
    }
}

/// A test tool `make test-tools` installs: `$env` if set, else `default`.
pub fn tool(env: &str, default: PathBuf) -> PathBuf {
    let path = std::env::var_os(env).map(PathBuf::from).unwrap_or(default);
    assert!(
        path.exists(),
        "{} is missing: `make test-tools` installs it (make test does)",
        path.display()
    );
    path
}

pub fn python() -> PathBuf {
    tool(
        "COVERWATCH_TEST_PYTHON",
        workspace_root().join(".coverwatch/venv/bin/python"),
    )
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
