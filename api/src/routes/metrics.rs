//! `GET /metrics`: Prometheus text format. Every subscriber's position, lag
//! (events, counted up to 10,000, and seconds) and events processed, from
//! the checkpoints (read at most once a second); the Kafka publisher's
//! counters when it runs in this process. On the API listener it answers a
//! bearer of the metrics (or admin) token only; `http.metrics_bind` serves
//! it on an internal listener without credentials.

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use secrecy::ExposeSecret;
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
#[utoipa::path(get, path = "/metrics", tag = "health", security(("admin_token" = [])),
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain"),
              (status = 401, body = crate::error::Problem)))]
pub async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let allowed = [&state.settings.http.metrics_token, &state.settings.http.admin_token]
        .into_iter()
        .flatten()
        .any(|token| {
            presented.is_some_and(|p| crate::auth::constant_time_eq(p.as_bytes(), token.expose_secret().as_bytes()))
        });
    if !allowed {
        return Err(ApiError::Unauthorized);
    }
    exposition(&state).await
}

/// The metrics text, for whoever may read it.
pub async fn exposition(state: &AppState) -> ApiResult<Response> {
    let rows = state.checkpoints.read(&state.pool).await?;
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
