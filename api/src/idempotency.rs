//! `Idempotency-Key` for POST requests: the first request with a key claims
//! it, runs, and stores its response; a retry with the same key and the same
//! request gets that response back without running again (so nothing is
//! appended twice). The same key with a different request is refused.
//! Keys are scoped to the caller's credentials and kept for 24 hours.
//!
//! The stored response can hold a secret shown once (a new API key), so the
//! table holds only a hash of the idempotency key and the response sealed with
//! ChaCha20-Poly1305 under a key derived from the idempotency key: reading the
//! database does not reveal it; retrying with the key does.

use crate::error::ApiError;
use crate::state::AppState;
use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use coverwatch_commands::idempotency::{self as store, Entry};
use coverwatch_commands::secrets::sha256_hex;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

const KEY_HEADER: &str = "idempotency-key";
const REPLAYED_HEADER: &str = "idempotent-replayed";
const KEPT_HEADERS: [&str; 3] = ["content-type", "etag", "location"];

/// The first response, as sealed in the table.
#[derive(Serialize, Deserialize)]
struct StoredResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn cipher(scope: &str, key: &str) -> ChaCha20Poly1305 {
    let mut hasher = Sha256::new();
    hasher.update(b"coverwatch.idempotency.v1\n");
    hasher.update(scope.as_bytes());
    hasher.update(b"\n");
    hasher.update(key.as_bytes());
    ChaCha20Poly1305::new(Key::from_slice(&hasher.finalize()))
}

fn seal(scope: &str, key: &str, response: &StoredResponse) -> anyhow::Result<Vec<u8>> {
    let mut nonce = [0u8; 12];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let plaintext = serde_json::to_vec(response)?;
    let sealed = cipher(scope, key)
        .encrypt(Nonce::from_slice(&nonce), plaintext.as_slice())
        .map_err(|_| anyhow::anyhow!("sealing an idempotent response"))?;
    Ok([nonce.as_slice(), sealed.as_slice()].concat())
}

fn open(scope: &str, key: &str, sealed: &[u8]) -> anyhow::Result<StoredResponse> {
    anyhow::ensure!(sealed.len() > 12, "a sealed response is too short");
    let (nonce, ciphertext) = sealed.split_at(12);
    let plaintext = cipher(scope, key)
        .decrypt(Nonce::from_slice(nonce), ciphertext)
        .map_err(|_| anyhow::anyhow!("opening an idempotent response"))?;
    Ok(serde_json::from_slice(&plaintext)?)
}

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
    let key_hash = sha256_hex(&format!("{scope}\n{key}"));
    let (parts, body) = request.into_parts();
    let bytes = to_bytes(body, state.settings.http.max_body_bytes)
        .await
        .map_err(|_| ApiError::PayloadTooLarge)?;
    let mut hasher = Sha256::new();
    hasher.update(parts.method.as_str().as_bytes());
    hasher.update(b" ");
    hasher.update(parts.uri.path().as_bytes());
    hasher.update(b"\n");
    hasher.update(&bytes);
    let fingerprint = hex::encode(hasher.finalize());

    store::purge_expired(&state.pool).await?;
    let claimed = store::claim(&state.pool, &scope, &key_hash, &fingerprint).await?;
    if !claimed {
        let Some(Entry {
            fingerprint: stored_fingerprint,
            response_status,
            response,
        }) = store::find(&state.pool, &scope, &key_hash).await?
        else {
            return Err(ApiError::Conflict(
                "the idempotency key is being released; retry".into(),
            ));
        };
        if stored_fingerprint != fingerprint {
            return Err(ApiError::Unprocessable(
                "this Idempotency-Key was used for a different request".into(),
            ));
        }
        let (Some(_), Some(sealed)) = (response_status, response) else {
            return Err(ApiError::Conflict(
                "a request with this Idempotency-Key is still in progress".into(),
            ));
        };
        return Ok(replay(open(&scope, &key, &sealed)?));
    }

    let response = next.run(Request::from_parts(parts, Body::from(bytes))).await;
    let (parts, body) = response.into_parts();
    let bytes = to_bytes(body, usize::MAX)
        .await
        .map_err(|e| ApiError::Internal(anyhow::anyhow!(e)))?;
    if parts.status.is_server_error() {
        // A failure on our side: let the client retry for real.
        store::release(&state.pool, &scope, &key_hash).await?;
    } else {
        let stored = StoredResponse {
            status: parts.status.as_u16(),
            headers: KEPT_HEADERS
                .iter()
                .filter_map(|name| Some((name.to_string(), parts.headers.get(*name)?.to_str().ok()?.to_owned())))
                .collect(),
            body: bytes.to_vec(),
        };
        store::record(
            &state.pool,
            &scope,
            &key_hash,
            stored.status,
            &seal(&scope, &key, &stored)?,
        )
        .await?;
    }
    Ok(Response::from_parts(parts, Body::from(bytes)))
}

fn replay(stored: StoredResponse) -> Response {
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    let mut response = (status, stored.body).into_response();
    let headers = response.headers_mut();
    for (name, value) in stored.headers {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::from_str(&value)) {
            headers.insert(name, value);
        }
    }
    headers.insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
    response
}
