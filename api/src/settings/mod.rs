//! Typed settings, nested by concern: defaults, then an optional TOML file
//! (`COVERWATCH_CONFIG`, else `coverwatch.toml` if present) with one table
//! per concern (`[database]`, `[http]`, `[kafka]`, ...), then environment
//! variables. Each setting keeps the one flat variable name it has always
//! had (`COVERWATCH_KAFKA_BROKERS` → `kafka.brokers`, `DATABASE_URL` →
//! `database.url`; see `ENVIRONMENT`). Secrets stay wrapped in `SecretString`.

use anyhow::Context;
use secrecy::SecretString;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

mod environment;
pub use environment::ENVIRONMENT;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Production: no embedded defaults. The server refuses to start without
    /// a configured database URL, audit signing key and AWS principal (every
    /// replica must sign with the same key, and never use a throwaway
    /// cluster or the placeholder principal).
    #[serde(default)]
    pub production: bool,
    #[serde(default)]
    pub database: DatabaseSettings,
    #[serde(default)]
    pub http: HttpSettings,
    #[serde(default)]
    pub subscribers: SubscriberSettings,
    #[serde(default)]
    pub local: LocalSettings,
    #[serde(default)]
    pub audit: AuditSettings,
    #[serde(default)]
    pub kafka: KafkaSettings,
    #[serde(default)]
    pub stripe: StripeSettings,
    #[serde(default)]
    pub aws: AwsSettings,
    #[serde(default)]
    pub tenants: TenantSettings,
    #[serde(default)]
    pub billing: BillingSettings,
    #[serde(default)]
    pub log: LogSettings,
    #[serde(default)]
    pub jobs: JobSettings,
}

/// Durable jobs (scans and discoveries) in this process.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JobSettings {
    /// Run job workers here (off for `--api-only` and `--subscribers-only`).
    pub enabled: bool,
    /// Jobs of each kind one process runs at once (accounts scanned in
    /// parallel).
    pub concurrency: usize,
    /// A job whose worker is silent this long is taken over by another.
    pub heartbeat_secs: u64,
    /// How often idle workers look for work (new jobs wake them at once).
    pub poll_ms: u64,
    /// Start the scans and re-discoveries the plans schedule (the upkeep
    /// loop's process).
    pub scheduled_scans: bool,
}

impl Default for JobSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            concurrency: 8,
            heartbeat_secs: 15,
            poll_ms: 5_000,
            scheduled_scans: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseSettings {
    /// Where the event log lives, as the serving credential (a login role in
    /// `coverwatch_app`: no DDL, events only read and appended); without it
    /// a local cluster is provisioned.
    pub url: Option<SecretString>,
    /// The owner's credential: migrations (and `replay rebuild`) run with
    /// it, never the server. Without it, `url` migrates too (one role).
    pub owner_url: Option<SecretString>,
    pub pool_size: u32,
    /// Connections for long reads (exports, verification, state as of),
    /// apart from the pool that serves ordinary requests.
    pub streaming_pool_size: u32,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            url: None,
            owner_url: None,
            pool_size: 20,
            streaming_pool_size: 6,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSettings {
    /// Serve the HTTP API in this process.
    pub enabled: bool,
    pub bind: String,
    pub admin_token: Option<SecretString>,
    pub max_body_bytes: usize,
    /// How long a command waits for the read models to show its effect.
    pub consistency_wait_ms: u64,
    /// The web app's address: checkout returns there, 402/403 link to its
    /// billing page.
    pub public_url: String,
    /// The rate limits: per tenant by its plan (requests per minute), and
    /// per client address on sign-up, invitation acceptance and failed
    /// authentication. Off only for benchmarks.
    pub rate_limits: bool,
    /// Anonymous sign-ups one client address may make per hour.
    pub signups_per_hour: u32,
    /// Invitation acceptances one client address may attempt per hour.
    pub invitation_accepts_per_hour: u32,
    /// Failed authentications (a credential presented and refused) one
    /// client address may make per hour; beyond, every credential it
    /// presents is refused (429) until the hour ends.
    pub auth_failures_per_hour: u32,
    /// How long an `Idempotency-Key` stays its request's after the last
    /// sign of life (renewed while it runs): after a crash, a retry waits
    /// this long at most before completing the request.
    pub idempotency_lease_secs: u64,
    /// Proxies in front of the API that append to `X-Forwarded-For`: the
    /// client address is that many entries from its right (0: the socket's
    /// peer; never trust the header without a proxy that sets it).
    pub trusted_proxy_hops: u32,
    /// `GET /metrics` on the API listener answers a bearer of this token (or
    /// of the admin token) only.
    pub metrics_token: Option<SecretString>,
    /// Long reads (exports, verification, state as of) one tenant may run at
    /// once (429 beyond).
    pub streams_per_tenant: u32,
    /// An export whose client reads nothing for this long is abandoned.
    pub stream_idle_secs: u64,
    /// Any long read ends after this long.
    pub stream_max_secs: u64,
    /// A separate listener (e.g. `127.0.0.1:9100`, internal only) serving
    /// `/metrics`, `/healthz` and `/readyz` without credentials; it runs in
    /// every process kind, the subscribers-only one too.
    pub metrics_bind: Option<String>,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            bind: "127.0.0.1:8080".into(),
            admin_token: None,
            max_body_bytes: 64 * 1024,
            consistency_wait_ms: 5_000,
            public_url: "http://127.0.0.1:8080".into(),
            rate_limits: true,
            signups_per_hour: 20,
            invitation_accepts_per_hour: 30,
            auth_failures_per_hour: 60,
            trusted_proxy_hops: 0,
            idempotency_lease_secs: 10,
            metrics_token: None,
            metrics_bind: None,
            streams_per_tenant: 2,
            stream_idle_secs: 30,
            stream_max_secs: 600,
        }
    }
}

impl HttpSettings {
    pub fn idempotency_lease(&self) -> Duration {
        Duration::from_secs(self.idempotency_lease_secs.max(1))
    }

    pub fn consistency_wait(&self) -> Duration {
        Duration::from_millis(self.consistency_wait_ms)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SubscriberSettings {
    /// Run the log subscribers (read models, workflows) in this process.
    pub enabled: bool,
    /// Events per subscriber transaction.
    pub batch_size: i64,
    /// How often the upkeep loop records due subscription transitions and
    /// keeps the coverage history.
    pub settle_interval_ms: u64,
}

impl Default for SubscriberSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            batch_size: 10_000,
            settle_interval_ms: 60_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LocalSettings {
    /// Directory of the provisioned local PostgreSQL cluster.
    pub dir: PathBuf,
    pub port: u16,
}

impl Default for LocalSettings {
    fn default() -> Self {
        Self {
            dir: PathBuf::from(".coverwatch"),
            port: 54329,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditSettings {
    /// Hex of the 32-byte Ed25519 seed that signs digest checkpoints and audit
    /// bundles; without it a key is created under the local dir on first use.
    pub signing_key: Option<SecretString>,
    /// A signed digest checkpoint every this many events (per scope)...
    pub checkpoint_every: i64,
    /// ...or when the last one is this old (seconds).
    pub checkpoint_max_age_secs: i64,
}

impl Default for AuditSettings {
    fn default() -> Self {
        Self {
            signing_key: None,
            checkpoint_every: 1_000,
            checkpoint_max_age_secs: 60,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaSettings {
    /// Bootstrap servers; without them the publisher is off and events wait
    /// in the log (published from the checkpoint once configured).
    pub brokers: Option<String>,
    pub topic_prefix: String,
    pub partitions: i32,
    /// `key=value` pairs, comma-separated, passed to librdkafka as they are
    /// (e.g. `security.protocol=SASL_SSL,sasl.mechanism=PLAIN,...`).
    pub properties: Option<SecretString>,
    pub max_message_bytes: usize,
    pub delivery_timeout_ms: u64,
}

impl Default for KafkaSettings {
    fn default() -> Self {
        Self {
            brokers: None,
            topic_prefix: "coverwatch".into(),
            partitions: 6,
            properties: None,
            max_message_bytes: 1_000_000,
            delivery_timeout_ms: 10_000,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StripeSettings {
    /// Stripe's secret API key (`STRIPE_SECRET_KEY`); without it paid
    /// checkout answers 503 and everything else works.
    pub secret_key: Option<SecretString>,
    /// The webhook endpoint's signing secret (`STRIPE_WEBHOOK_SECRET`).
    pub webhook_secret: Option<SecretString>,
    /// Where the Stripe API is (`STRIPE_API_BASE`; tests use a local server).
    pub api_base: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AwsSettings {
    /// Coverwatch's AWS principal: the audit roles in tenants' accounts trust
    /// it (with the tenant's external id).
    pub principal_arn: String,
    /// The AWS endpoint (`AWS_ENDPOINT_URL`; tests point it at moto).
    pub endpoint_url: Option<String>,
    pub region: String,
    /// Base credentials for assuming tenants' roles; without them the AWS
    /// SDK's default chain (environment, profile, instance role).
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<SecretString>,
    /// Discovery's pace per AWS operation (AWS's 8 requests/s by default; 0
    /// turns pacing off, e.g. against a local fake).
    pub requests_per_second: f64,
}

/// The principal the embedded default trusts: a placeholder for local use.
pub const PLACEHOLDER_AWS_PRINCIPAL: &str = "arn:aws:iam::000000000000:root";

impl Default for AwsSettings {
    fn default() -> Self {
        Self {
            // A placeholder for local use; production sets its own account.
            principal_arn: PLACEHOLDER_AWS_PRINCIPAL.into(),
            endpoint_url: None,
            region: "us-east-1".into(),
            access_key_id: None,
            secret_access_key: None,
            requests_per_second: coverwatch_commands::adapters::aws::AWS_REQUESTS_PER_SECOND,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TenantSettings {
    pub invitation_ttl_hours: i64,
}

impl Default for TenantSettings {
    fn default() -> Self {
        Self {
            invitation_ttl_hours: 7 * 24,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BillingSettings {
    /// A plan catalog file replacing the shipped `domain/data/plans.toml`.
    pub plan_catalog_path: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    /// `json` for structured logs, `pretty` for people.
    pub format: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: "pretty".into(),
        }
    }
}

impl Settings {
    /// Defaults, the TOML file, then the environment (later variables of
    /// `ENVIRONMENT` win over earlier ones for the same setting).
    pub fn load() -> anyhow::Result<Self> {
        let file = std::env::var("COVERWATCH_CONFIG").unwrap_or_else(|_| "coverwatch.toml".into());
        let required = std::env::var("COVERWATCH_CONFIG").is_ok();
        let mut builder = config::Config::builder().add_source(
            config::File::with_name(&file)
                .format(config::FileFormat::Toml)
                .required(required),
        );
        for (variable, key) in ENVIRONMENT {
            if let Ok(value) = std::env::var(variable) {
                builder = builder.set_override(*key, value)?;
            }
        }
        builder
            .build()
            .context("reading settings")?
            .try_deserialize()
            .context("invalid settings")
    }

    /// In production, what is missing (nothing otherwise): every setting the
    /// embedded default would otherwise invent.
    pub fn missing_for_production(&self) -> Vec<&'static str> {
        use secrecy::ExposeSecret;
        if !self.production {
            return vec![];
        }
        let mut missing = vec![];
        if self
            .database
            .url
            .as_ref()
            .is_none_or(|url| url.expose_secret().trim().is_empty())
        {
            missing.push("database.url (DATABASE_URL): production never provisions a local cluster");
        }
        if self
            .database
            .owner_url
            .as_ref()
            .is_none_or(|url| url.expose_secret().trim().is_empty())
        {
            missing.push(
                "database.owner_url (COVERWATCH_DATABASE_OWNER_URL): migrations run as the tables' owner, the server as a role that cannot rewrite them",
            );
        }
        if self
            .audit
            .signing_key
            .as_ref()
            .is_none_or(|key| key.expose_secret().trim().is_empty())
        {
            missing.push(
                "audit.signing_key (COVERWATCH_AUDIT_SIGNING_KEY): every replica must sign with the same configured key",
            );
        }
        if self.aws.principal_arn.trim().is_empty() || self.aws.principal_arn == PLACEHOLDER_AWS_PRINCIPAL {
            missing.push("aws.principal_arn (COVERWATCH_AWS_PRINCIPAL_ARN): tenants' roles must trust Coverwatch's own principal");
        }
        missing
    }

    /// Defaults only (tests and the benchmarks fill in what they need).
    pub fn defaults() -> Self {
        serde_json::from_value(serde_json::json!({})).expect("defaults deserialize")
    }

    /// The audit signing key: configured, else created under the local dir.
    pub fn audit_signer(&self) -> anyhow::Result<coverwatch_projections::signing::AuditSigner> {
        use coverwatch_projections::signing::AuditSigner;
        use secrecy::ExposeSecret;
        match &self.audit.signing_key {
            Some(key) => AuditSigner::from_hex(key.expose_secret()),
            None if self.production => {
                anyhow::bail!("production needs audit.signing_key (COVERWATCH_AUDIT_SIGNING_KEY)")
            }
            None => {
                let path = self.local.dir.join("audit-signing.key");
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
            self.audit.checkpoint_every,
            chrono::Duration::seconds(self.audit.checkpoint_max_age_secs),
        )
    }

    /// The Kafka publisher's settings, when brokers are configured.
    pub fn kafka(&self) -> anyhow::Result<Option<coverwatch_projections::kafka::KafkaSettings>> {
        use secrecy::ExposeSecret;
        let kafka = &self.kafka;
        let Some(brokers) = kafka.brokers.clone().filter(|b| !b.trim().is_empty()) else {
            return Ok(None);
        };
        let mut properties = vec![];
        if let Some(raw) = &kafka.properties {
            for pair in raw.expose_secret().split(',').map(str::trim).filter(|p| !p.is_empty()) {
                let (key, value) = pair
                    .split_once('=')
                    .ok_or_else(|| anyhow::anyhow!("COVERWATCH_KAFKA_PROPERTIES: `{pair}` is not key=value"))?;
                properties.push((key.trim().to_owned(), value.trim().to_owned()));
            }
        }
        Ok(Some(coverwatch_projections::kafka::KafkaSettings {
            brokers,
            topic_prefix: kafka.topic_prefix.clone(),
            partitions: kafka.partitions,
            properties,
            max_message_bytes: kafka.max_message_bytes,
            delivery_timeout: Duration::from_millis(kafka.delivery_timeout_ms),
        }))
    }

    /// The plan catalog: the configured file, else the shipped one.
    pub fn plan_catalog(&self) -> anyhow::Result<coverwatch_domain::plans::PlanCatalog> {
        use coverwatch_domain::plans::PlanCatalog;
        match &self.billing.plan_catalog_path {
            None => Ok(PlanCatalog::shipped()),
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading the plan catalog {}", path.display()))?;
                PlanCatalog::parse(&text).with_context(|| format!("in {}", path.display()))
            }
        }
    }

    /// The Stripe client, when a secret key is configured.
    pub fn stripe(&self) -> anyhow::Result<Option<coverwatch_commands::adapters::stripe::StripeClient>> {
        use secrecy::ExposeSecret;
        let Some(key) = self
            .stripe
            .secret_key
            .as_ref()
            .filter(|k| !k.expose_secret().is_empty())
        else {
            return Ok(None);
        };
        let client = coverwatch_commands::adapters::stripe::StripeClient::new(
            key.expose_secret(),
            self.stripe.api_base.as_deref(),
        )?;
        Ok(Some(client))
    }

    /// Where the AWS SDK goes, with which base credentials.
    pub fn jobs(&self) -> coverwatch_commands::workflows::jobs::JobSettings {
        coverwatch_commands::workflows::jobs::JobSettings {
            concurrency: self.jobs.concurrency.max(1),
            heartbeat: Duration::from_secs(self.jobs.heartbeat_secs.max(1)),
            poll: Duration::from_millis(self.jobs.poll_ms.max(100)),
            ..Default::default()
        }
    }

    pub fn aws(&self) -> coverwatch_commands::adapters::aws::AwsSettings {
        use secrecy::ExposeSecret;
        let aws = &self.aws;
        coverwatch_commands::adapters::aws::AwsSettings {
            endpoint_url: aws.endpoint_url.clone(),
            region: aws.region.clone(),
            access_key: match (&aws.access_key_id, &aws.secret_access_key) {
                (Some(id), Some(secret)) => Some((id.clone(), secret.expose_secret().to_owned())),
                _ => None,
            },
            requests_per_second: aws.requests_per_second,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each variable names a setting that exists: with unknown fields
    /// refused, `section.field` parses with a value of some type only if the
    /// field is there.
    #[test]
    fn every_variable_names_a_setting_that_exists() {
        for (variable, key) in ENVIRONMENT {
            let accepted = [
                serde_json::json!("1"),
                serde_json::json!(1),
                serde_json::json!(true),
                serde_json::json!(1.5),
            ]
            .into_iter()
            .any(|sample| {
                let value = match key.split_once('.') {
                    Some((section, field)) => serde_json::json!({ section: { field: sample } }),
                    None => serde_json::json!({ *key: sample }),
                };
                serde_json::from_value::<Settings>(value).is_ok()
            });
            assert!(accepted, "{variable} sets {key}, which is not a setting");
        }
        let unknown = serde_json::json!({"http": {"no_such_field": "1"}});
        assert!(serde_json::from_value::<Settings>(unknown).is_err());
    }
}
