//! Liveness and readiness.

use crate::error::ApiResult;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Serialize, ToSchema)]
pub struct Health {
    pub status: &'static str,
}

#[derive(Serialize, ToSchema)]
pub struct SubscriberLag {
    pub name: String,
    pub position: i64,
    /// Events after its checkpoint, counted up to 10,000.
    pub lag_events: i64,
}

#[derive(Serialize, ToSchema)]
pub struct Readiness {
    pub status: &'static str,
    pub database: bool,
    pub subscribers: Vec<SubscriberLag>,
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// The database answers; shows how far each subscriber lags behind the log.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses((status = 200, body = Readiness), (status = 503, body = Readiness)))]
pub async fn readyz(State(state): State<AppState>) -> ApiResult<(StatusCode, Json<Readiness>)> {
    let rows = state.checkpoints.read(&state.pool).await;
    Ok(match rows {
        Ok(rows) => (
            StatusCode::OK,
            Json(Readiness {
                status: "ready",
                database: true,
                subscribers: rows
                    .into_iter()
                    .map(|row| SubscriberLag {
                        name: row.name,
                        position: row.position,
                        lag_events: row.lag_events,
                    })
                    .collect(),
            }),
        ),
        Err(error) => {
            tracing::warn!(error = %error, "readiness check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(Readiness {
                    status: "unavailable",
                    database: false,
                    subscribers: vec![],
                }),
            )
        }
    })
}
