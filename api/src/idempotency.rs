//! `Idempotency-Key` for POST requests: the first request with a key claims
//! it, runs, and stores its response; a retry with the same key and the same
//! request gets that response back without running again (so nothing is
//! appended twice). The same key with a different request is refused.
//! Keys are scoped to the caller's credentials and kept for 24 hours.

use crate::error::ApiError;
use crate::state::AppState;
use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use coverwatch_commands::secrets::sha256_hex;
use sha2::{Digest, Sha256};

const KEY_HEADER: &str = "idempotency-key";
const REPLAYED_HEADER: &str = "idempotent-replayed";
const KEPT_HEADERS: [&str; 3] = ["content-type", "etag", "location"];

pub async fn layer(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if request.method() != Method::POST {
        return next.run(request).await;
    }
    let Some(key) = request
        .headers()
        .get(KEY_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
    else {
        return next.run(request).await;
    };
    match handle(state, key, request, next).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn handle(state: AppState, key: String, request: Request, next: Next) -> Result<Response, ApiError> {
    if key.is_empty() || key.len() > 255 {
        return Err(ApiError::validation("Idempotency-Key", "must be 1 to 255 characters"));
    }
    let scope = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(sha256_hex)
        .unwrap_or_else(|| "anonymous".into());
    let (parts, body) = request.into_parts();
    let bytes = to_bytes(body, state.settings.max_body_bytes)
        .await
        .map_err(|_| ApiError::PayloadTooLarge)?;
    let mut hasher = Sha256::new();
    hasher.update(parts.method.as_str().as_bytes());
    hasher.update(b" ");
    hasher.update(parts.uri.path().as_bytes());
    hasher.update(b"\n");
    hasher.update(&bytes);
    let fingerprint = hex::encode(hasher.finalize());

    sqlx::query("DELETE FROM idempotency_keys WHERE created_at < now() - interval '24 hours'")
        .execute(&state.pool)
        .await?;
    let claimed = sqlx::query(
        "INSERT INTO idempotency_keys (scope, key, fingerprint) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
    )
    .bind(&scope)
    .bind(&key)
    .bind(&fingerprint)
    .execute(&state.pool)
    .await?
    .rows_affected()
        == 1;

    if !claimed {
        let stored: Option<StoredResponse> = sqlx::query_as(
            "SELECT fingerprint, response_status, response_body, response_headers
                   FROM idempotency_keys WHERE scope = $1 AND key = $2",
        )
        .bind(&scope)
        .bind(&key)
        .fetch_optional(&state.pool)
        .await?;
        let Some((stored_fingerprint, status, body, headers)) = stored else {
            return Err(ApiError::Conflict(
                "the idempotency key is being released; retry".into(),
            ));
        };
        if stored_fingerprint != fingerprint {
            return Err(ApiError::Unprocessable(
                "this Idempotency-Key was used for a different request".into(),
            ));
        }
        let Some(status) = status else {
            return Err(ApiError::Conflict(
                "a request with this Idempotency-Key is still in progress".into(),
            ));
        };
        return Ok(replay(status, body, headers));
    }

    let response = next.run(Request::from_parts(parts, Body::from(bytes))).await;
    let (parts, body) = response.into_parts();
    let bytes = to_bytes(body, usize::MAX)
        .await
        .map_err(|e| ApiError::Internal(anyhow::anyhow!(e)))?;
    if parts.status.is_server_error() {
        // A failure on our side: let the client retry for real.
        sqlx::query("DELETE FROM idempotency_keys WHERE scope = $1 AND key = $2")
            .bind(&scope)
            .bind(&key)
            .execute(&state.pool)
            .await?;
    } else {
        let body: Option<serde_json::Value> = serde_json::from_slice(&bytes).ok();
        let headers: serde_json::Map<String, serde_json::Value> = KEPT_HEADERS
            .iter()
            .filter_map(|name| {
                let value = parts.headers.get(*name)?.to_str().ok()?;
                Some((name.to_string(), serde_json::Value::String(value.to_owned())))
            })
            .collect();
        sqlx::query(
            "UPDATE idempotency_keys SET response_status = $3, response_body = $4, response_headers = $5
              WHERE scope = $1 AND key = $2",
        )
        .bind(&scope)
        .bind(&key)
        .bind(i32::from(parts.status.as_u16()))
        .bind(body)
        .bind(serde_json::Value::Object(headers))
        .execute(&state.pool)
        .await?;
    }
    Ok(Response::from_parts(parts, Body::from(bytes)))
}

/// fingerprint, status, body, headers of a stored first response.
type StoredResponse = (
    String,
    Option<i32>,
    Option<serde_json::Value>,
    Option<serde_json::Value>,
);

fn replay(status: i32, body: Option<serde_json::Value>, headers: Option<serde_json::Value>) -> Response {
    let status = u16::try_from(status)
        .ok()
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut response = (status, body).into_response();
    let map: &mut HeaderMap = response.headers_mut();
    if let Some(serde_json::Value::Object(headers)) = headers {
        for (name, value) in headers {
            if let (Ok(name), Some(Ok(value))) = (
                HeaderName::try_from(name.as_str()),
                value.as_str().map(HeaderValue::from_str),
            ) {
                map.insert(name, value);
            }
        }
    }
    map.insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
    response
}
