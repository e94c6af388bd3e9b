//! The embedded default database: a throwaway PostgreSQL cluster under
//! `.coverwatch/` built with Debian's `postgresql` package, created on first
//! use and started when not running. Installs the package with apt when it is
//! missing and we are root; otherwise says what to do.

use anyhow::{Context, bail};
use sha2::Digest;
use std::path::{Path, PathBuf};
use std::process::Command;

pub struct LocalPostgres {
    dir: PathBuf,
    port: u16,
}

const SUPERUSER: &str = "coverwatch";

impl LocalPostgres {
    pub fn new(dir: &Path, port: u16) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let dir = std::fs::canonicalize(dir)?;
        Ok(Self { dir, port })
    }

    pub fn url(&self, database: &str) -> String {
        self.url_as(SUPERUSER, database)
    }

    /// The URL of `database` as `role` (the cluster trusts local logins).
    pub fn url_as(&self, role: &str, database: &str) -> String {
        format!("postgres://{role}@127.0.0.1:{}/{database}", self.port)
    }

    pub fn bin_dir(&self) -> anyhow::Result<PathBuf> {
        if let Some(dir) = find_bin_dir() {
            return Ok(dir);
        }
        install_postgres()?;
        find_bin_dir().context("PostgreSQL was installed but initdb is still not found")
    }

    /// Create (first time) and start the cluster; returns the server URL of
    /// database `coverwatch`, created if missing.
    /// Where the cluster's files live: `.coverwatch/pgdata`, unless we run as
    /// root in a directory the `postgres` user cannot reach (a clone under
    /// /root, say): then a directory of its own home, linked from
    /// `.coverwatch/pgdata`.
    fn data_dir(&self, as_root: bool) -> anyhow::Result<PathBuf> {
        let link = self.dir.join("pgdata");
        if let Ok(target) = std::fs::read_link(&link) {
            return Ok(target);
        }
        if !as_root || link.exists() {
            return Ok(link);
        }
        std::fs::create_dir_all(&link)?;
        run(Command::new("chown").arg("postgres:postgres").arg(&self.dir).arg(&link))?;
        let reachable = Command::new("runuser")
            .args(["-u", "postgres", "--", "test", "-w"])
            .arg(&link)
            .status()
            .is_ok_and(|s| s.success());
        if reachable {
            return Ok(link);
        }
        std::fs::remove_dir(&link)?;
        let name = hex::encode(&sha2::Sha256::digest(self.dir.to_string_lossy().as_bytes())[..8]);
        let outside = PathBuf::from("/var/lib/postgresql/coverwatch").join(name);
        std::fs::create_dir_all(&outside)?;
        run(Command::new("chown")
            .arg("-R")
            .arg("postgres:postgres")
            .arg("/var/lib/postgresql/coverwatch"))?;
        std::os::unix::fs::symlink(&outside, &link)?;
        tracing::info!(dir = %outside.display(), "the postgres user cannot reach .coverwatch/: keeping the cluster here");
        Ok(outside)
    }

    pub async fn ensure_running(&self) -> anyhow::Result<String> {
        let bin = self.bin_dir()?;
        let as_root = is_root();
        let data = self.data_dir(as_root)?;
        if !data.join("PG_VERSION").exists() {
            std::fs::create_dir_all(&data)?;
            if as_root {
                run(Command::new("chown").arg("-R").arg("postgres:postgres").arg(&data))?;
            }
            tracing::info!(dir = %data.display(), "creating a local PostgreSQL cluster");
            run(self.as_owner(&bin.join("initdb"), as_root).args([
                "-D",
                path_str(&data)?,
                "-U",
                SUPERUSER,
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ]))?;
        }
        let status = self
            .as_owner(&bin.join("pg_ctl"), as_root)
            .args(["status", "-D", path_str(&data)?])
            .output()?;
        if !status.status.success() {
            let log = data.join("postgres.log");
            if as_root {
                // The log file must be writable by the cluster's owner.
                std::fs::OpenOptions::new().create(true).append(true).open(&log)?;
                run(Command::new("chown").arg("postgres:postgres").arg(&log))?;
            }
            let options = format!(
                "-c port={} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' \
                 -c max_connections=500 -c shared_buffers=256MB",
                self.port
            );
            tracing::info!(port = self.port, "starting the local PostgreSQL cluster");
            run(self.as_owner(&bin.join("pg_ctl"), as_root).args([
                "start",
                "-w",
                "-t",
                "60",
                "-D",
                path_str(&data)?,
                "-l",
                path_str(&log)?,
                "-o",
                &options,
            ]))
            .with_context(|| format!("starting PostgreSQL (see {})", log.display()))?;
        }
        let admin = sqlx::PgPool::connect(&self.url("postgres"))
            .await
            .context("connecting to the local cluster")?;
        let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT FROM pg_database WHERE datname = 'coverwatch')")
            .fetch_one(&admin)
            .await?;
        if !exists {
            // Two processes may race here; the loser's error is harmless.
            let _ = sqlx::query("CREATE DATABASE coverwatch").execute(&admin).await;
        }
        admin.close().await;
        Ok(self.url("coverwatch"))
    }

    pub fn stop(&self) -> anyhow::Result<()> {
        let bin = self.bin_dir()?;
        let data = self.data_dir(is_root())?;
        run(self
            .as_owner(&bin.join("pg_ctl"), is_root())
            .args(["stop", "-m", "fast", "-D", path_str(&data)?]))
    }

    /// PostgreSQL refuses to run as root: run its tools as `postgres` then.
    fn as_owner(&self, program: &Path, as_root: bool) -> Command {
        if as_root {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        }
    }
}

fn path_str(path: &Path) -> anyhow::Result<&str> {
    path.to_str().context("non-UTF-8 path")
}

fn run(command: &mut Command) -> anyhow::Result<()> {
    let output = command.output().with_context(|| format!("running {command:?}"))?;
    if !output.status.success() {
        bail!(
            "{command:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// The newest `/usr/lib/postgresql/<version>/bin` with initdb, else PATH.
fn find_bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).find(|dir| dir.join("initdb").exists() && dir.join("pg_ctl").exists())
}

fn install_postgres() -> anyhow::Result<()> {
    let hint = "PostgreSQL is not installed. Install Debian's package (`sudo apt-get install postgresql`) \
                or point DATABASE_URL at a PostgreSQL server you run.";
    if !is_root() || Command::new("apt-get").arg("--version").output().is_err() {
        bail!(hint);
    }
    tracing::info!("installing Debian's postgresql package with apt-get");
    let apt = |args: &[&str]| {
        run(Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive"))
        .context(hint)
    };
    apt(&["update"])?;
    apt(&[
        "install",
        "-y",
        "--no-install-recommends",
        "postgresql",
        "postgresql-contrib",
    ])
}
