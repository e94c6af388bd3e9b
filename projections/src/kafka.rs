//! The Kafka publisher: one more subscriber of the log. It publishes each
//! batch with an idempotent producer (`enable.idempotence=true`, `acks=all`)
//! and returns only when the broker has acknowledged every message, so its
//! checkpoint (committed with the batch) never passes an unacknowledged
//! event. After a crash or a broker outage it re-publishes from the
//! checkpoint: at-least-once, never skipping; consumers deduplicate by
//! `ce_id` (the event id).
//!
//! Topics: `{prefix}.{aggregate_type}`, key = aggregate id (one partition per
//! aggregate, so its events stay in order). Value: the JSON event envelope.
//! Headers: CloudEvents 1.0, Kafka protocol binding, binary content mode.
//!
//! Poison policy: an event whose message would exceed `max_message_bytes`
//! (or that the broker refuses as too large) is recorded in
//! `publisher_dead_letters` and replaced, in place, by a notice with the same
//! key, id and headers and `"payload_omitted": true`, so the stream neither
//! blocks nor loses its place; consumers fetch the full event from the API.

use crate::event::StoredEvent;
use crate::runtime::Subscriber;
use anyhow::{Context, bail};
use async_trait::async_trait;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use serde_json::{Value, json};
use sqlx::PgConnection;
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The aggregate types whose topics are created up front.
pub const AGGREGATE_TYPES: [&str; 4] = ["tenant", "subscription", "cloud_organization", "detection"];

#[derive(Debug, Clone)]
pub struct KafkaSettings {
    pub brokers: String,
    pub topic_prefix: String,
    pub partitions: i32,
    /// Passed through to librdkafka (security.protocol, sasl.*, ...).
    pub properties: Vec<(String, String)>,
    pub max_message_bytes: usize,
    pub delivery_timeout: Duration,
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct PublisherMetrics {
    pub published: AtomicU64,
    pub delivery_errors: AtomicU64,
    pub oversized: AtomicU64,
    /// Milliseconds from commit (recorded_at) to acknowledgement, last batch's maximum.
    pub last_ack_latency_ms: AtomicU64,
    /// Recent commit-to-acknowledgement times in microseconds (for benchmarks).
    pub ack_latencies_us: Mutex<Vec<u64>>,
}

impl PublisherMetrics {
    /// The `q` quantile (0..=1) of the recorded latencies, in milliseconds.
    pub fn latency_quantile_ms(&self, q: f64) -> Option<f64> {
        let mut all = self.ack_latencies_us.lock().expect("latency lock").clone();
        if all.is_empty() {
            return None;
        }
        all.sort_unstable();
        let index = ((all.len() - 1) as f64 * q).round() as usize;
        Some(all[index] as f64 / 1000.0)
    }
}

pub struct KafkaPublisher {
    settings: KafkaSettings,
    producer: Mutex<FutureProducer>,
    admin: AdminClient<DefaultClientContext>,
    topics: Mutex<HashSet<String>>,
    pub metrics: Arc<PublisherMetrics>,
}

fn client_config(settings: &KafkaSettings) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &settings.brokers);
    for (key, value) in &settings.properties {
        config.set(key, value);
    }
    config
}

fn producer(settings: &KafkaSettings) -> anyhow::Result<FutureProducer> {
    let mut config = client_config(settings);
    config
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("message.timeout.ms", settings.delivery_timeout.as_millis().to_string())
        .set("linger.ms", "2")
        .set("queue.buffering.max.messages", "200000");
    config.create().context("creating the Kafka producer")
}

impl KafkaPublisher {
    pub fn new(settings: KafkaSettings) -> anyhow::Result<Self> {
        let admin = client_config(&settings)
            .create()
            .context("creating the Kafka admin client")?;
        Ok(Self {
            producer: Mutex::new(producer(&settings)?),
            admin,
            topics: Mutex::new(HashSet::new()),
            settings,
            metrics: Arc::default(),
        })
    }

    pub fn topic(&self, aggregate_type: &str) -> String {
        format!("{}.{aggregate_type}", self.settings.topic_prefix)
    }

    /// Create the topics for these aggregate types if they do not exist.
    pub async fn ensure_topics(&self, aggregate_types: &[&str]) -> anyhow::Result<()> {
        let missing: Vec<String> = {
            let known = self.topics.lock().expect("topics lock");
            aggregate_types
                .iter()
                .map(|t| self.topic(t))
                .filter(|t| !known.contains(t))
                .collect()
        };
        if missing.is_empty() {
            return Ok(());
        }
        let new_topics: Vec<NewTopic<'_>> = missing
            .iter()
            .map(|name| NewTopic::new(name, self.settings.partitions, TopicReplication::Fixed(1)))
            .collect();
        let options = AdminOptions::new().operation_timeout(Some(self.settings.delivery_timeout));
        let results = self
            .admin
            .create_topics(&new_topics, &options)
            .await
            .context("creating topics")?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => bail!("creating topic {topic}: {code}"),
            }
        }
        self.topics.lock().expect("topics lock").extend(missing);
        Ok(())
    }

    fn current_producer(&self) -> FutureProducer {
        self.producer.lock().expect("producer lock").clone()
    }

    /// After a failed batch, start over with a fresh producer (a new producer
    /// id and sequence): a broker that restarted may no longer know the old
    /// idempotence state and refuse every later message of it. The batch is
    /// published again from the checkpoint either way.
    fn renew_producer(&self) {
        if let Some((code, reason)) = self.current_producer().client().fatal_error() {
            tracing::error!(?code, reason, "the Kafka producer failed fatally");
        }
        match producer(&self.settings) {
            Ok(fresh) => {
                let old = std::mem::replace(&mut *self.producer.lock().expect("producer lock"), fresh);
                release(old);
            }
            Err(error) => tracing::error!(error = %format!("{error:#}"), "could not create a Kafka producer"),
        }
    }
}

/// Dropping the last handle of a producer calls `rd_kafka_destroy`, which
/// blocks until its in-flight messages are done: never on an async worker.
fn release(producer: FutureProducer) {
    tokio::task::spawn_blocking(move || drop(producer));
}

/// `TenantCreated` → `tenant_created`.
fn snake(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// The JSON envelope published as the message value.
pub fn envelope(event: &StoredEvent) -> Value {
    json!({
        "event_id": event.event_id,
        "aggregate_type": event.aggregate_type,
        "aggregate_id": event.aggregate_id,
        "sequence": event.sequence,
        "position": event.position,
        "event_type": event.event_type,
        "event_version": event.event_version,
        "recorded_at": event.recorded_at,
        "tenant_id": event.tenant_id,
        "metadata": event.metadata,
        "payload": event.payload,
        "prev_hash": event.prev_hash,
        "hash": event.hash,
    })
}

/// CloudEvents 1.0 attributes as Kafka headers (binary content mode).
pub fn cloud_event_headers(event: &StoredEvent) -> Vec<(&'static str, String)> {
    let major = event.event_version.split('.').next().unwrap_or("1");
    let mut headers = vec![
        ("ce_specversion", "1.0".to_owned()),
        ("ce_id", event.event_id.to_string()),
        ("ce_source", format!("/coverwatch/{}", event.aggregate_type)),
        (
            "ce_type",
            format!(
                "com.coverwatch.{}.{}.v{major}",
                event.aggregate_type,
                snake(&event.event_type)
            ),
        ),
        (
            "ce_time",
            event.recorded_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        ),
        ("ce_subject", event.aggregate_id.clone()),
        ("ce_sequence", event.sequence.to_string()),
        ("ce_position", event.position.to_string()),
        ("content-type", "application/json".to_owned()),
    ];
    if let Some(tenant) = event.tenant_id {
        headers.push(("ce_tenantid", tenant.to_string()));
    }
    headers
}

fn owned_headers(headers: &[(&'static str, String)]) -> OwnedHeaders {
    headers.iter().fold(OwnedHeaders::new(), |all, (key, value)| {
        all.insert(Header {
            key,
            value: Some(value.as_bytes()),
        })
    })
}

fn omitted(event: &StoredEvent, size: usize, reason: &str) -> Vec<u8> {
    let mut notice = envelope(event);
    notice["payload"] = Value::Null;
    notice["payload_omitted"] = json!({"reason": reason, "size": size});
    serde_json::to_vec(&notice).unwrap_or_default()
}

async fn dead_letter(conn: &mut PgConnection, event: &StoredEvent, size: usize, reason: &str) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO publisher_dead_letters (position, event_id, aggregate_type, aggregate_id, size, reason)
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (position) DO NOTHING",
    )
    .bind(event.position)
    .bind(event.event_id)
    .bind(&event.aggregate_type)
    .bind(&event.aggregate_id)
    .bind(size as i64)
    .bind(reason)
    .execute(conn)
    .await?;
    Ok(())
}

fn too_large(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::InvalidMessageSize)
    )
}

#[async_trait]
impl Subscriber for KafkaPublisher {
    fn name(&self) -> &'static str {
        "kafka_publisher"
    }

    fn tables(&self) -> &'static [&'static str] {
        &[]
    }

    fn rebuildable(&self) -> bool {
        false
    }

    fn awaited(&self) -> bool {
        false
    }

    async fn handle(&self, conn: &mut PgConnection, events: &[StoredEvent]) -> anyhow::Result<()> {
        let mut types: Vec<&str> = AGGREGATE_TYPES.to_vec();
        types.extend(events.iter().map(|e| e.aggregate_type.as_str()));
        types.sort_unstable();
        types.dedup();
        self.ensure_topics(&types).await?;
        let producer = self.current_producer();
        let timeout = rdkafka::util::Timeout::After(self.settings.delivery_timeout);

        // Enqueue everything first, then await: awaiting each send in turn
        // would cost a round trip per event.
        let mut pending = Vec::with_capacity(events.len());
        for event in events {
            let topic = self.topic(&event.aggregate_type);
            let headers = cloud_event_headers(event);
            let mut value = serde_json::to_vec(&envelope(event))?;
            if value.len() > self.settings.max_message_bytes {
                let reason = format!("larger than {} bytes", self.settings.max_message_bytes);
                dead_letter(conn, event, value.len(), &reason).await?;
                self.metrics.oversized.fetch_add(1, Ordering::Relaxed);
                value = omitted(event, value.len(), &reason);
            }
            let record = FutureRecord::to(&topic)
                .key(&event.aggregate_id)
                .payload(&value)
                .headers(owned_headers(&headers));
            let delivery = producer.send_result(record).map_err(|(error, _)| error);
            pending.push((event, delivery));
        }
        let mut slowest_ms = 0u64;
        let mut latencies = Vec::with_capacity(events.len());
        let mut failure: Option<anyhow::Error> = None;
        for (event, delivery) in pending {
            let outcome = match delivery {
                Ok(future) => match future.await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err((error, _))) => Err(error),
                    Err(_) => Err(KafkaError::Canceled),
                },
                Err(error) => Err(error),
            };
            match outcome {
                Ok(()) => {
                    self.metrics.published.fetch_add(1, Ordering::Relaxed);
                    let lag = (chrono::Utc::now() - event.recorded_at)
                        .num_microseconds()
                        .unwrap_or(0)
                        .max(0) as u64;
                    latencies.push(lag);
                    slowest_ms = slowest_ms.max(lag / 1000);
                }
                Err(error) if too_large(&error) => {
                    // The broker's limit is below ours: same policy, smaller notice.
                    let reason = format!("refused by the broker: {error}");
                    dead_letter(conn, event, 0, &reason).await?;
                    self.metrics.oversized.fetch_add(1, Ordering::Relaxed);
                    let notice = omitted(event, 0, &reason);
                    let topic = self.topic(&event.aggregate_type);
                    let record = FutureRecord::to(&topic)
                        .key(&event.aggregate_id)
                        .payload(&notice)
                        .headers(owned_headers(&cloud_event_headers(event)));
                    producer.send(record, timeout).await.map_err(|(error, _)| {
                        anyhow::anyhow!("publishing the notice for an oversized event: {error}")
                    })?;
                    self.metrics.published.fetch_add(1, Ordering::Relaxed);
                }
                Err(error) => {
                    self.metrics.delivery_errors.fetch_add(1, Ordering::Relaxed);
                    failure.get_or_insert_with(|| {
                        anyhow::anyhow!(
                            "Kafka did not acknowledge event {} at {}: {error}",
                            event.event_id,
                            event.position
                        )
                    });
                }
            }
        }
        release(producer);
        if let Some(error) = failure {
            // Nothing of this batch is checkpointed: it is published again.
            self.renew_producer();
            return Err(error);
        }
        self.metrics.last_ack_latency_ms.store(slowest_ms, Ordering::Relaxed);
        let mut recent = self.metrics.ack_latencies_us.lock().expect("latency lock");
        if recent.len() + latencies.len() > 200_000 {
            recent.clear();
        }
        recent.extend(latencies);
        Ok(())
    }
}

/// Events published without their payload (too large), for `/metrics`.
pub async fn dead_letters(pool: &sqlx::PgPool) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT count(*) FROM publisher_dead_letters")
        .fetch_one(pool)
        .await
}
