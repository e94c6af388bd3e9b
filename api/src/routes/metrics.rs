//! `GET /metrics`: Prometheus text format. Every subscriber's position, lag
//! (events and seconds) and events processed, from the checkpoints; the Kafka
//! publisher's counters when it runs in this process.

use crate::error::ApiResult;
use crate::state::AppState;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use std::fmt::Write;
use std::sync::atomic::Ordering;

use coverwatch_projections::runtime::CheckpointStatus;

/// A metric family per subscriber: name, type, help, value of a row.
type Series = (
    &'static str,
    &'static str,
    &'static str,
    fn(&CheckpointStatus) -> String,
);

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> ApiResult<Response> {
    let rows = coverwatch_projections::runtime::checkpoints(&state.pool).await?;
    let mut out = String::new();
    let series: [Series; 4] = [
        (
            "coverwatch_subscriber_position",
            "gauge",
            "Global position of the last event the subscriber processed.",
            |r| r.position.to_string(),
        ),
        (
            "coverwatch_subscriber_events_processed_total",
            "counter",
            "Events the subscriber has processed.",
            |r| r.events_processed.to_string(),
        ),
        (
            "coverwatch_subscriber_lag_events",
            "gauge",
            "Events in the log the subscriber has not processed yet.",
            |r| r.lag_events.to_string(),
        ),
        (
            "coverwatch_subscriber_lag_seconds",
            "gauge",
            "Age of the oldest event the subscriber has not processed yet.",
            |r| format!("{:.3}", r.lag_seconds),
        ),
    ];
    for (name, kind, help, value) in series {
        family(&mut out, name, kind, help);
        for row in &rows {
            let _ = writeln!(out, "{name}{{subscriber=\"{}\"}} {}", row.name, value(row));
        }
    }
    let dead_letters = coverwatch_projections::kafka::dead_letters(&state.pool).await?;
    family(
        &mut out,
        "coverwatch_kafka_dead_letters",
        "gauge",
        "Events published without their payload (too large).",
    );
    let _ = writeln!(out, "coverwatch_kafka_dead_letters {dead_letters}");
    if let Some(publisher) = &state.publisher {
        let counters = [
            (
                "coverwatch_kafka_published_total",
                "counter",
                "Messages the broker acknowledged.",
                publisher.published.load(Ordering::Relaxed),
            ),
            (
                "coverwatch_kafka_delivery_errors_total",
                "counter",
                "Messages the broker did not acknowledge (re-published later).",
                publisher.delivery_errors.load(Ordering::Relaxed),
            ),
            (
                "coverwatch_kafka_oversized_total",
                "counter",
                "Events too large to publish whole.",
                publisher.oversized.load(Ordering::Relaxed),
            ),
        ];
        for (name, kind, help, value) in counters {
            family(&mut out, name, kind, help);
            let _ = writeln!(out, "{name} {value}");
        }
        family(
            &mut out,
            "coverwatch_kafka_ack_latency_seconds",
            "gauge",
            "Commit-to-acknowledgement time of the last batch's slowest event.",
        );
        let _ = writeln!(
            out,
            "coverwatch_kafka_ack_latency_seconds {:.3}",
            publisher.last_ack_latency_ms.load(Ordering::Relaxed) as f64 / 1000.0
        );
    }
    let mut response = out.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    Ok(response)
}
