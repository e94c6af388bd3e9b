//! Typed settings: defaults, then an optional TOML file (`COVERWATCH_CONFIG`,
//! else `coverwatch.toml` if present), then environment variables
//! (`DATABASE_URL`, `COVERWATCH_*`). Secrets stay wrapped in `SecretString`.

use anyhow::Context;
use secrecy::SecretString;
use serde::Deserialize;
use std::path::PathBuf;

#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    /// Where the event log lives; without it a local cluster is provisioned.
    #[serde(default)]
    pub database_url: Option<SecretString>,
    #[serde(default = "default_bind")]
    pub bind: String,
    #[serde(default)]
    pub admin_token: Option<SecretString>,
    /// Serve the HTTP API in this process.
    #[serde(default = "yes")]
    pub api: bool,
    /// Run the log subscribers (read models) in this process.
    #[serde(default = "yes")]
    pub subscribers: bool,
    #[serde(default = "default_body_limit")]
    pub max_body_bytes: usize,
    #[serde(default = "default_invitation_ttl")]
    pub invitation_ttl_hours: i64,
    /// How long a command waits for the read models to show its effect.
    #[serde(default = "default_consistency_wait")]
    pub consistency_wait_ms: u64,
    #[serde(default = "default_pool")]
    pub database_pool_size: u32,
    #[serde(default = "default_batch")]
    pub subscriber_batch_size: i64,
    /// Directory of the provisioned local PostgreSQL cluster.
    #[serde(default = "default_local_dir")]
    pub local_dir: PathBuf,
    #[serde(default = "default_local_port")]
    pub local_port: u16,
    /// Hex of the 32-byte Ed25519 seed that signs digest checkpoints and audit
    /// bundles; without it a key is created under `local_dir` on first use.
    #[serde(default)]
    pub audit_signing_key: Option<SecretString>,
    /// A signed digest checkpoint every this many events (per scope)...
    #[serde(default = "default_checkpoint_every")]
    pub digest_checkpoint_every: i64,
    /// ...or when the last one is this old (seconds).
    #[serde(default = "default_checkpoint_age")]
    pub digest_checkpoint_max_age_secs: i64,
    /// Kafka bootstrap servers; without them the publisher is off and events
    /// wait in the log (published from the checkpoint once configured).
    #[serde(default)]
    pub kafka_brokers: Option<String>,
    #[serde(default = "default_topic_prefix")]
    pub kafka_topic_prefix: String,
    #[serde(default = "default_partitions")]
    pub kafka_partitions: i32,
    /// `key=value` pairs, comma-separated, passed to librdkafka as they are
    /// (e.g. `security.protocol=SASL_SSL,sasl.mechanism=PLAIN,...`).
    #[serde(default)]
    pub kafka_properties: Option<SecretString>,
    #[serde(default = "default_max_message")]
    pub kafka_max_message_bytes: usize,
    #[serde(default = "default_delivery_timeout")]
    pub kafka_delivery_timeout_ms: u64,
    /// Stripe's secret API key (`STRIPE_SECRET_KEY`); without it paid
    /// checkout answers 503 and everything else works.
    #[serde(default)]
    pub stripe_secret_key: Option<SecretString>,
    /// The webhook endpoint's signing secret (`STRIPE_WEBHOOK_SECRET`).
    #[serde(default)]
    pub stripe_webhook_secret: Option<SecretString>,
    /// Where the Stripe API is (`STRIPE_API_BASE`; tests use a local server).
    #[serde(default)]
    pub stripe_api_base: Option<String>,
    /// A plan catalog file replacing the shipped `domain/data/plans.toml`.
    #[serde(default)]
    pub plan_catalog_path: Option<PathBuf>,
    /// The web app's address: checkout returns there, 402/403 link to its
    /// billing page.
    #[serde(default = "default_public_url")]
    pub public_url: String,
    /// How often due subscription transitions (period ends) are recorded.
    #[serde(default = "default_settle_interval")]
    pub settle_interval_ms: u64,
    /// Per-tenant API rate limits of the plan (requests per minute).
    #[serde(default = "yes")]
    pub rate_limits: bool,
    /// Coverwatch's AWS principal: the audit roles in tenants' accounts trust
    /// it (with the tenant's external id).
    #[serde(default = "default_aws_principal")]
    pub aws_principal_arn: String,
    /// The AWS endpoint (`AWS_ENDPOINT_URL`; tests point it at moto).
    #[serde(default)]
    pub aws_endpoint_url: Option<String>,
    #[serde(default = "default_aws_region")]
    pub aws_region: String,
    /// Base credentials for assuming tenants' roles; without them the AWS
    /// SDK's default chain (environment, profile, instance role).
    #[serde(default)]
    pub aws_access_key_id: Option<String>,
    #[serde(default)]
    pub aws_secret_access_key: Option<SecretString>,
    /// Discovery's pace per AWS operation (AWS's 8 requests/s by default; 0
    /// turns pacing off, e.g. against a local fake).
    #[serde(default = "default_aws_requests_per_second")]
    pub aws_requests_per_second: f64,
    /// `json` for structured logs, `pretty` for people.
    #[serde(default = "default_log_format")]
    pub log_format: String,
}

fn default_bind() -> String {
    "127.0.0.1:8080".into()
}
fn yes() -> bool {
    true
}
fn default_body_limit() -> usize {
    64 * 1024
}
fn default_invitation_ttl() -> i64 {
    7 * 24
}
fn default_consistency_wait() -> u64 {
    5_000
}
fn default_pool() -> u32 {
    20
}
fn default_batch() -> i64 {
    10_000
}
fn default_local_dir() -> PathBuf {
    PathBuf::from(".coverwatch")
}
fn default_local_port() -> u16 {
    54329
}
fn default_checkpoint_every() -> i64 {
    1_000
}
fn default_checkpoint_age() -> i64 {
    60
}
fn default_topic_prefix() -> String {
    "coverwatch".into()
}
fn default_partitions() -> i32 {
    6
}
fn default_max_message() -> usize {
    1_000_000
}
fn default_delivery_timeout() -> u64 {
    10_000
}
fn default_public_url() -> String {
    "http://127.0.0.1:8080".into()
}
fn default_settle_interval() -> u64 {
    60_000
}
fn default_aws_principal() -> String {
    // A placeholder for local use; production sets its own account.
    "arn:aws:iam::000000000000:root".into()
}
fn default_aws_requests_per_second() -> f64 {
    coverwatch_commands::aws::AWS_REQUESTS_PER_SECOND
}

fn default_aws_region() -> String {
    "us-east-1".into()
}
fn default_log_format() -> String {
    "pretty".into()
}

impl Settings {
    pub fn load() -> anyhow::Result<Self> {
        let file = std::env::var("COVERWATCH_CONFIG").unwrap_or_else(|_| "coverwatch.toml".into());
        let required = std::env::var("COVERWATCH_CONFIG").is_ok();
        let mut builder = config::Config::builder()
            .add_source(
                config::File::with_name(&file)
                    .format(config::FileFormat::Toml)
                    .required(required),
            )
            .add_source(config::Environment::with_prefix("COVERWATCH").try_parsing(true));
        if let Ok(url) = std::env::var("DATABASE_URL") {
            builder = builder.set_override("database_url", url)?;
        }
        // Stripe's own variable names, as its documentation uses them.
        for (variable, key) in [
            ("STRIPE_SECRET_KEY", "stripe_secret_key"),
            ("STRIPE_WEBHOOK_SECRET", "stripe_webhook_secret"),
            ("STRIPE_API_BASE", "stripe_api_base"),
        ] {
            if let Ok(value) = std::env::var(variable) {
                builder = builder.set_override(key, value)?;
            }
        }
        builder
            .build()
            .context("reading settings")?
            .try_deserialize()
            .context("invalid settings")
    }

    /// The audit signing key: configured, else created under `local_dir`.
    pub fn audit_signer(&self) -> anyhow::Result<coverwatch_projections::signing::AuditSigner> {
        use coverwatch_projections::signing::AuditSigner;
        use secrecy::ExposeSecret;
        match &self.audit_signing_key {
            Some(key) => AuditSigner::from_hex(key.expose_secret()),
            None => {
                let path = self.local_dir.join("audit-signing.key");
                tracing::warn!(path = %path.display(), "no COVERWATCH_AUDIT_SIGNING_KEY: using a key kept on local disk");
                AuditSigner::load_or_create(&path)
            }
        }
    }

    /// The digest subscriber configured by these settings, signing with `signer`.
    pub fn digests(
        &self,
        signer: coverwatch_projections::signing::AuditSigner,
    ) -> coverwatch_projections::digest::Digests {
        coverwatch_projections::digest::Digests::new(
            signer,
            self.digest_checkpoint_every,
            chrono::Duration::seconds(self.digest_checkpoint_max_age_secs),
        )
    }

    /// The Kafka publisher's settings, when brokers are configured.
    pub fn kafka(&self) -> anyhow::Result<Option<coverwatch_projections::kafka::KafkaSettings>> {
        use secrecy::ExposeSecret;
        let Some(brokers) = self.kafka_brokers.clone().filter(|b| !b.trim().is_empty()) else {
            return Ok(None);
        };
        let mut properties = vec![];
        if let Some(raw) = &self.kafka_properties {
            for pair in raw.expose_secret().split(',').map(str::trim).filter(|p| !p.is_empty()) {
                let (key, value) = pair
                    .split_once('=')
                    .ok_or_else(|| anyhow::anyhow!("COVERWATCH_KAFKA_PROPERTIES: `{pair}` is not key=value"))?;
                properties.push((key.trim().to_owned(), value.trim().to_owned()));
            }
        }
        Ok(Some(coverwatch_projections::kafka::KafkaSettings {
            brokers,
            topic_prefix: self.kafka_topic_prefix.clone(),
            partitions: self.kafka_partitions,
            properties,
            max_message_bytes: self.kafka_max_message_bytes,
            delivery_timeout: std::time::Duration::from_millis(self.kafka_delivery_timeout_ms),
        }))
    }

    /// The plan catalog: the configured file, else the shipped one.
    pub fn plan_catalog(&self) -> anyhow::Result<coverwatch_domain::plans::PlanCatalog> {
        use coverwatch_domain::plans::PlanCatalog;
        match &self.plan_catalog_path {
            None => Ok(PlanCatalog::shipped()),
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading the plan catalog {}", path.display()))?;
                PlanCatalog::parse(&text).with_context(|| format!("in {}", path.display()))
            }
        }
    }

    /// The Stripe client, when a secret key is configured.
    pub fn stripe(&self) -> anyhow::Result<Option<coverwatch_commands::stripe::StripeClient>> {
        use secrecy::ExposeSecret;
        let Some(key) = self
            .stripe_secret_key
            .as_ref()
            .filter(|k| !k.expose_secret().is_empty())
        else {
            return Ok(None);
        };
        let client =
            coverwatch_commands::stripe::StripeClient::new(key.expose_secret(), self.stripe_api_base.as_deref())?;
        Ok(Some(client))
    }

    /// Where discovery's AWS SDK goes, with which base credentials.
    pub fn aws(&self) -> coverwatch_commands::aws::AwsSettings {
        use secrecy::ExposeSecret;
        coverwatch_commands::aws::AwsSettings {
            endpoint_url: self
                .aws_endpoint_url
                .clone()
                .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok()),
            region: self.aws_region.clone(),
            access_key: match (&self.aws_access_key_id, &self.aws_secret_access_key) {
                (Some(id), Some(secret)) => Some((id.clone(), secret.expose_secret().to_owned())),
                _ => None,
            },
            requests_per_second: self.aws_requests_per_second,
        }
    }

    /// Defaults only (tests and the benchmark fill in what they need).
    pub fn defaults() -> Self {
        serde_json::from_value(serde_json::json!({})).expect("defaults deserialize")
    }
}
