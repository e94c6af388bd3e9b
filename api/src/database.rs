//! The database a server uses: the serving and owner credentials (or the
//! provisioned local cluster), the serving role, the pool, and the
//! migrations (Coverwatch's and the job queue's).

use crate::devtools::local_pg::LocalPostgres;
use crate::settings::Settings;
use anyhow::Context;
use secrecy::{ExposeSecret, SecretString};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// The login role the embedded default serves as: a member of
/// `coverwatch_app` (created by the migrations), whose grants are all it has.
pub const LOCAL_SERVING_ROLE: &str = "coverwatch_server";

/// The two credentials: the one the server uses, and the owner's, which
/// migrates.
pub struct DatabaseUrls {
    pub serving: SecretString,
    pub owner: SecretString,
}

/// The configured credentials (the owner's defaults to the serving one),
/// else the provisioned local cluster: its superuser migrates, the server
/// logs in as `coverwatch_server`.
pub async fn database_urls(settings: &Settings) -> anyhow::Result<DatabaseUrls> {
    match &settings.database.url {
        Some(url) => Ok(DatabaseUrls {
            serving: url.clone(),
            owner: settings.database.owner_url.clone().unwrap_or_else(|| url.clone()),
        }),
        None if settings.production => anyhow::bail!("production needs database.url (DATABASE_URL)"),
        None => {
            let local = LocalPostgres::new(&settings.local.dir, settings.local.port)?;
            let owner = local.ensure_running().await?;
            Ok(DatabaseUrls {
                serving: local.url_as(LOCAL_SERVING_ROLE, "coverwatch").into(),
                owner: owner.into(),
            })
        }
    }
}

/// Migrates with the owner's credential and returns the serving one (for
/// the embedded default, its login role is created here).
pub async fn prepare_database(settings: &Settings) -> anyhow::Result<SecretString> {
    let urls = database_urls(settings).await?;
    let owner = connect(&urls.owner, 2).await?;
    migrate(&owner).await?;
    if settings.database.url.is_none() {
        ensure_serving_role(&owner, LOCAL_SERVING_ROLE).await?;
    }
    owner.close().await;
    Ok(urls.serving)
}

/// A login role with `coverwatch_app`'s grants and nothing else (the
/// embedded default and the tests; elsewhere the operator creates it).
pub async fn ensure_serving_role(owner: &PgPool, role: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        role.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
        "a role name of lowercase letters and underscores"
    );
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = $1)")
        .bind(role)
        .fetch_one(owner)
        .await?;
    if !exists {
        // Two processes may race here; the loser's error is harmless.
        let _ = sqlx::query(&format!("CREATE ROLE {role} LOGIN IN ROLE coverwatch_app"))
            .execute(owner)
            .await;
    }
    Ok(())
}

/// The serving credential must not own the event log (the owner can
/// disable its triggers and rewrite it): refused in production, a warning
/// otherwise.
pub(crate) async fn refuse_owning_credential(pool: &PgPool, production: bool) -> anyhow::Result<()> {
    let owns: Option<bool> = sqlx::query_scalar(
        "SELECT pg_has_role(current_user, tableowner, 'USAGE') FROM pg_tables
          WHERE schemaname = 'public' AND tablename = 'events'",
    )
    .fetch_optional(pool)
    .await
    .context("checking who owns the event log")?;
    if owns == Some(true) {
        anyhow::ensure!(
            !production,
            "refusing to serve as the owner of the event log: set database.url to a role in coverwatch_app \
             and database.owner_url to the owner"
        );
        tracing::warn!("serving as the owner of the event log: use a role in coverwatch_app (see README)");
    }
    Ok(())
}

pub async fn connect(url: &SecretString, size: u32) -> anyhow::Result<PgPool> {
    PgPoolOptions::new()
        .max_connections(size)
        .connect(url.expose_secret())
        .await
        .context("connecting to PostgreSQL")
}

/// Coverwatch's migrations, then the job queue's (its own schema,
/// `underway`), whose tables the serving role may use.
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    // Processes started together (replicas, worker processes) would race on
    // the job queue's migrations and the grants ("tuple concurrently
    // updated", and one process exits): one at a time, under an advisory
    // lock held by a session of its own, which closing releases.
    let mut lock = pool.acquire().await?.detach();
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut lock)
        .await
        .context("waiting for other processes' migrations")?;
    let applied = apply_migrations(pool).await;
    let _ = sqlx::Connection::close(lock).await;
    applied
}

/// The advisory lock key migrations take ("cw-migra").
const MIGRATION_LOCK: i64 = 0x6377_2d6d_6967_7261;

async fn apply_migrations(pool: &PgPool) -> anyhow::Result<()> {
    MIGRATOR.run(pool).await.context("applying migrations")?;
    underway::run_migrations(pool)
        .await
        .context("applying the job queue's migrations")?;
    sqlx::raw_sql(
        "GRANT USAGE ON SCHEMA underway TO coverwatch_app;
         GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA underway TO coverwatch_app;",
    )
    .execute(pool)
    .await
    .context("granting the job queue to coverwatch_app")?;
    Ok(())
}
