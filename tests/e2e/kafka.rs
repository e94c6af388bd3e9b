//! Publishing to Kafka against a real Kafka-protocol broker (tansu, started
//! per test on a free port) and consumed with clients that are not project
//! code: the official Python client (confluent-kafka) and rdkafka.

use crate::helpers::{TestApp, TestTenant, expect_status, free_port, python, spawn_app_with, tool, workspace_root};
use coverwatch_domain::clock::SystemClock;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

const TOPICS: [&str; 4] = [
    "coverwatch.tenant",
    "coverwatch.subscription",
    "coverwatch.cloud_organization",
    "coverwatch.detection",
];

fn tansu_binary() -> PathBuf {
    let home = PathBuf::from(std::env::var("HOME").unwrap_or_default());
    tool("COVERWATCH_TANSU", home.join(".cache/coverwatch/tansu-0.6.0/bin/tansu"))
}

/// A tansu broker of this test's own: in memory, or on SQLite when it must
/// survive a restart (slower to read back).
pub struct Broker {
    port: u16,
    dir: PathBuf,
    durable: bool,
    child: Option<tokio::process::Child>,
}

impl Broker {
    pub async fn start() -> Broker {
        Self::start_with(false).await
    }

    pub async fn start_durable() -> Broker {
        Self::start_with(true).await
    }

    async fn start_with(durable: bool) -> Broker {
        let dir = std::env::temp_dir().join(format!("coverwatch-tansu-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut broker = Broker {
            port: free_port(),
            dir,
            durable,
            child: None,
        };
        broker.up().await;
        broker
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub async fn up(&mut self) {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let child = tokio::process::Command::new(tansu_binary())
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
            .args([
                "--storage-engine",
                if self.durable {
                    "sqlite://tansu.db"
                } else {
                    "memory://tansu/"
                },
            ])
            .current_dir(&self.dir)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let alive = self.child.as_mut().unwrap().try_wait().unwrap().is_none();
            assert!(alive, "tansu exited at start");
            if tokio::net::TcpStream::connect(self.address()).await.is_ok() {
                break;
            }
            assert!(Instant::now() < deadline, "tansu did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, and wait until it is gone.
    pub async fn down(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = child.id().unwrap();
            std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .unwrap();
            let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
            let _ = child.start_kill();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Consume with the official Python client until `expected` messages arrive.
pub fn consume(broker: &Broker, expected: usize, timeout: Duration) -> Vec<Value> {
    let script = workspace_root().join("tests/tools/kafka_consume.py");
    let output = std::process::Command::new(python())
        .arg(script)
        .args([
            broker.address(),
            format!("test-{}", Uuid::new_v4()),
            timeout.as_secs().to_string(),
            expected.to_string(),
        ])
        .args(TOPICS)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "consumer failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

async fn spawn_with_kafka(broker: &Broker, configure: impl FnOnce(&mut coverwatch_api::Settings)) -> TestApp {
    let brokers = broker.address();
    spawn_app_with(Arc::new(SystemClock), move |s| {
        s.kafka.brokers = Some(brokers);
        s.kafka.partitions = 3;
        s.kafka.delivery_timeout_ms = 3_000;
        configure(s);
    })
    .await
}

async fn publisher_caught_up(app: &TestApp, timeout: Duration) {
    app.caught_up(Some("kafka_publisher"), timeout).await;
}

async fn all_events(app: &TestApp) -> Vec<(Uuid, String, i64, i64)> {
    sqlx::query_as("SELECT event_id, aggregate_id, sequence, position FROM events ORDER BY position")
        .fetch_all(&app.pool)
        .await
        .unwrap()
}

/// Dedupe by `ce_id` (first delivery wins) and check that, per key, the
/// first deliveries come in sequence order with valid CloudEvents headers.
fn check_stream(messages: &[Value], events: &[(Uuid, String, i64, i64)]) -> HashMap<Uuid, usize> {
    let mut deliveries: HashMap<Uuid, usize> = HashMap::new();
    let mut per_key: BTreeMap<(String, i32), Vec<(i64, i64)>> = BTreeMap::new();
    for message in messages {
        let headers = &message["headers"];
        let value = &message["value"];
        let id: Uuid = headers["ce_id"].as_str().unwrap().parse().unwrap();
        assert_eq!(headers["ce_specversion"], "1.0");
        assert_eq!(value["event_id"], id.to_string(), "ce_id is the event id");
        assert_eq!(headers["content-type"], "application/json");
        assert_eq!(headers["ce_subject"], value["aggregate_id"]);
        assert_eq!(message["key"], value["aggregate_id"], "keyed by aggregate id");
        assert_eq!(
            headers["ce_source"],
            format!("/coverwatch/{}", value["aggregate_type"].as_str().unwrap())
        );
        let event_type = value["event_type"].as_str().unwrap();
        let ce_type = headers["ce_type"].as_str().unwrap();
        assert!(
            ce_type.starts_with(&format!(
                "com.coverwatch.{}.",
                value["aggregate_type"].as_str().unwrap()
            )),
            "{ce_type}"
        );
        assert!(ce_type.ends_with(".v1"), "{ce_type}");
        assert_eq!(
            ce_type.split('.').nth(3).unwrap().replace('_', ""),
            event_type.to_lowercase(),
            "{ce_type}"
        );
        chrono::DateTime::parse_from_rfc3339(headers["ce_time"].as_str().unwrap()).unwrap();
        assert_eq!(
            message["topic"],
            format!("coverwatch.{}", value["aggregate_type"].as_str().unwrap())
        );
        for field in [
            "sequence",
            "position",
            "recorded_at",
            "tenant_id",
            "metadata",
            "payload",
            "hash",
            "prev_hash",
        ] {
            assert!(value.get(field).is_some(), "the envelope lacks {field}");
        }
        let count = deliveries.entry(id).or_default();
        *count += 1;
        if *count == 1 {
            // A tenant's Tenant and Subscription share its id as key, on
            // separate topics: order holds per topic and key.
            let key = (
                format!(
                    "{}/{}",
                    message["topic"].as_str().unwrap(),
                    message["key"].as_str().unwrap()
                ),
                message["partition"].as_i64().unwrap() as i32,
            );
            per_key
                .entry(key)
                .or_default()
                .push((value["sequence"].as_i64().unwrap(), message["offset"].as_i64().unwrap()));
        }
    }
    let expected: HashSet<Uuid> = events.iter().map(|e| e.0).collect();
    let delivered: HashSet<Uuid> = deliveries.keys().copied().collect();
    assert_eq!(delivered, expected, "after dedup, Kafka holds exactly the log's events");
    let keys_with_partitions: HashMap<&String, HashSet<i32>> = per_key.keys().fold(HashMap::new(), |mut m, (k, p)| {
        m.entry(k).or_default().insert(*p);
        m
    });
    assert!(
        keys_with_partitions.values().all(|p| p.len() == 1),
        "one partition per aggregate"
    );
    for ((key, _), sequences) in &per_key {
        let seqs: Vec<i64> = sequences.iter().map(|(s, _)| *s).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{key}: out of order {seqs:?}");
    }
    deliveries
}

async fn traffic(app: &TestApp, prefix: &str, tenants: usize) -> Vec<TestTenant> {
    let mut created = vec![];
    for i in 0..tenants {
        let tenant = app.create_tenant(&format!("{prefix}-{i}")).await;
        app.add_member(&tenant, &format!("m{i}@{prefix}.test"), "analyst").await;
        for n in 0..3 {
            let response = app
                .patch(
                    &format!("/v1/tenants/{}", tenant.id),
                    &tenant.key,
                    json!({"name": format!("N{n}")}),
                )
                .await;
            assert_eq!(response.status(), StatusCode::OK);
        }
        created.push(tenant);
    }
    created
}

#[tokio::test]
async fn every_event_reaches_kafka_once_per_id_in_order_with_cloudevents_headers() {
    let broker = Broker::start().await;
    let app = spawn_with_kafka(&broker, |_| {}).await;
    traffic(&app, "kafka", 4).await;
    publisher_caught_up(&app, Duration::from_secs(30)).await;
    let events = all_events(&app).await;
    let messages = consume(&broker, events.len(), Duration::from_secs(30));
    let deliveries = check_stream(&messages, &events);
    assert!(
        deliveries.values().all(|n| *n == 1),
        "no broker trouble, so no duplicates"
    );

    // The same stream read with rdkafka.
    use rdkafka::Message;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", broker.address())
        .set("group.id", format!("rust-{}", Uuid::new_v4()))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer
        .subscribe(&["coverwatch.tenant", "coverwatch.subscription"])
        .unwrap();
    let mut ids = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while ids.len() < events.len() && Instant::now() < deadline {
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(200)) {
            let value: Value = serde_json::from_slice(message.payload().unwrap()).unwrap();
            ids.insert(value["event_id"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(ids.len(), events.len());

    let metrics = app
        .request(reqwest::Method::GET, "/metrics", Some(crate::helpers::ADMIN_TOKEN))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(&format!("coverwatch_kafka_published_total {}", events.len())),
        "{metrics}"
    );
    assert!(
        metrics.contains("coverwatch_subscriber_lag_events{subscriber=\"kafka_publisher\"} 0"),
        "{metrics}"
    );
    assert!(metrics.contains("coverwatch_kafka_delivery_errors_total 0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_keep_succeeding_through_a_broker_outage_and_nothing_is_lost() {
    let mut broker = Broker::start_durable().await;
    let app = spawn_with_kafka(&broker, |_| {}).await;
    traffic(&app, "before", 2).await;
    publisher_caught_up(&app, Duration::from_secs(30)).await;

    broker.down().await;
    let started = Instant::now();
    traffic(&app, "during", 3).await;
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "commands were held up by the outage: {:?}",
        started.elapsed()
    );
    // The outage shows in the metrics: failed deliveries and a lagging publisher.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let metrics = app
            .request(reqwest::Method::GET, "/metrics", Some(crate::helpers::ADMIN_TOKEN))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let lagging = !metrics.contains("coverwatch_subscriber_lag_events{subscriber=\"kafka_publisher\"} 0\n");
        let failing = !metrics.contains("coverwatch_kafka_delivery_errors_total 0\n");
        if lagging && failing {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the outage never showed in the metrics: {metrics}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    broker.up().await;
    traffic(&app, "after", 1).await;
    publisher_caught_up(&app, Duration::from_secs(60)).await;
    let events = all_events(&app).await;
    let messages = consume(&broker, events.len(), Duration::from_secs(60));
    check_stream(&messages, &events);
}

#[tokio::test]
async fn a_killed_publisher_resumes_from_its_checkpoint_with_duplicates_only_after_it() {
    let broker = Broker::start().await;
    // Commands here; subscribers (and the publisher) in a process we kill.
    let app = spawn_app_with(Arc::new(SystemClock), |s| {
        s.subscribers.enabled = false;
        s.http.consistency_wait_ms = 0;
    })
    .await;
    // A backlog to publish in small batches, so the kill lands mid-stream.
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         SELECT 'detection', 'backlog-' || (g % 20), g / 20 + 1, 'Probed', '1.0', json_build_object('g', g),
                json_build_object('tenant_id', '00000000-0000-0000-0000-000000000001', 'actor', 'system',
                                  'request_id', 'r', 'correlation_id', 'c', 'causation_id', 'c')
           FROM generate_series(0, 1999) g ORDER BY g",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let start = |app: &TestApp| {
        tokio::process::Command::new(crate::crash::coverwatch_binary())
            .args(["serve", "--subscribers-only"])
            .env("DATABASE_URL", crate::helpers::serving_url(&app.database_url))
            .env("COVERWATCH_DATABASE_OWNER_URL", &app.database_url)
            .env("COVERWATCH_AUDIT_SIGNING_KEY", crate::helpers::SIGNING_KEY)
            .env("COVERWATCH_KAFKA_BROKERS", broker.address())
            .env("COVERWATCH_KAFKA_PARTITIONS", "3")
            .env("COVERWATCH_SUBSCRIBER_BATCH_SIZE", "25")
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap()
    };
    let mut child = start(&app);
    let checkpoint = |pool: sqlx::PgPool| async move {
        sqlx::query_scalar::<_, i64>(
            "SELECT coalesce(max(position), 0) FROM subscriber_checkpoints WHERE name = 'kafka_publisher'",
        )
        .fetch_one(&pool)
        .await
        .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while checkpoint(app.pool.clone()).await == 0 {
        assert!(Instant::now() < deadline, "the publisher never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.start_kill().unwrap(); // SIGKILL mid-stream
    child.wait().await.unwrap();
    let at_kill = checkpoint(app.pool.clone()).await;
    let last: i64 = sqlx::query_scalar("SELECT max(position) FROM events")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(at_kill < last, "the kill should land mid-stream");

    let mut child = start(&app);
    let deadline = Instant::now() + Duration::from_secs(60);
    while checkpoint(app.pool.clone()).await < last {
        assert!(Instant::now() < deadline, "the publisher did not finish after restart");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.start_kill().unwrap();
    child.wait().await.unwrap();

    let events = all_events(&app).await;
    let messages = consume(&broker, events.len(), Duration::from_secs(60));
    let deliveries = check_stream(&messages, &events);
    for (id, _, _, position) in &events {
        if *position <= at_kill {
            assert_eq!(
                deliveries[id], 1,
                "an event checkpointed before the kill was published twice"
            );
        }
    }
}

#[tokio::test]
async fn an_oversized_event_is_published_as_a_notice_and_blocks_nothing() {
    let broker = Broker::start().await;
    let app = spawn_with_kafka(&broker, |s| s.kafka.max_message_bytes = 8_000).await;
    let tenant = app.create_tenant("big").await;
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         VALUES ('detection', 'huge-1', 1, 'Huge', '1.0', json_build_object('blob', repeat('x', 20000)),
                 json_build_object('tenant_id', $1::text, 'actor', 'system', 'request_id', 'r',
                                   'correlation_id', 'c', 'causation_id', 'c'))",
    )
    .bind(&tenant.id)
    .execute(&app.pool)
    .await
    .unwrap();
    // The injected event is no real detection event: the coverage read
    // model stops at it (it never skips one), so this write, committed
    // after it, is acknowledged 202 rather than read back.
    expect_status(
        app.patch(
            &format!("/v1/tenants/{}", tenant.id),
            &tenant.key,
            json!({"name": "After"}),
        )
        .await,
        StatusCode::ACCEPTED,
    )
    .await;
    publisher_caught_up(&app, Duration::from_secs(30)).await;

    let events = all_events(&app).await;
    let messages = consume(&broker, events.len(), Duration::from_secs(30));
    check_stream(&messages, &events);
    let notice = messages.iter().find(|m| m["key"] == "huge-1").unwrap();
    assert_eq!(notice["value"]["payload"], Value::Null);
    assert!(notice["value"]["payload_omitted"]["size"].as_i64().unwrap() > 20_000);
    let (reason,): (String,) =
        sqlx::query_as("SELECT reason FROM publisher_dead_letters WHERE aggregate_id = 'huge-1'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(reason.contains("8000"));
    let metrics = app
        .request(reqwest::Method::GET, "/metrics", Some(crate::helpers::ADMIN_TOKEN))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("coverwatch_kafka_oversized_total 1"), "{metrics}");
    assert!(metrics.contains("coverwatch_kafka_dead_letters 1"), "{metrics}");
}
