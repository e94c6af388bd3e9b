//! `Idempotency-Key` for POST requests: the first request with a key claims
//! it, runs, and stores its response; a retry with the same key and the same
//! request gets that response back without running again (so nothing is
//! appended twice). The same key with a different request is refused.
//! Keys are scoped to the caller's credentials and kept for 24 hours.
//!
//! A request that dies with its process, or fails on the server's side
//! (5xx), leaves no answer: a retry takes the key over (once the lease of
//! the first has passed) and completes the request under the same key, so
//! the commands the first attempt committed are found and not run again,
//! and the ids and secrets come out the same (`coverwatch_commands::idempotency`).
//!
//! Without credentials the key must be a random UUID (version 4): it alone
//! lets a retry have the first answer (a new tenant's API key). The table
//! holds only an HMAC of the key under a server secret (derived from the
//! audit signing key) and the response sealed with ChaCha20-Poly1305 under
//! another: a reader of the database can neither test guessed keys nor open
//! a response.

use crate::error::ApiError;
use crate::state::AppState;
use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use coverwatch_commands::idempotency::{self as store, Attempt, Claim, Entry};
use coverwatch_commands::secrets::sha256_hex;
use hmac::{Hmac, Mac};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

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

/// 32 bytes for `purpose`, bound to the scope and the key, under the
/// server's secret (derived from the audit signing key): without it, a
/// reader of the database can neither test guessed keys against the stored
/// hashes nor open a stored response.
fn derive(secret: &[u8; 32], purpose: &str, scope: &str, key: &str) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("any key length");
    for part in [purpose, scope, key] {
        mac.update(part.as_bytes());
        mac.update(b"\n");
    }
    mac.finalize().into_bytes().into()
}

fn cipher(secret: &[u8; 32], scope: &str, key: &str) -> ChaCha20Poly1305 {
    ChaCha20Poly1305::new(Key::from_slice(&derive(secret, "seal", scope, key)))
}

fn seal(secret: &[u8; 32], scope: &str, key: &str, response: &StoredResponse) -> anyhow::Result<Vec<u8>> {
    let mut nonce = [0u8; 12];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let plaintext = serde_json::to_vec(response)?;
    let sealed = cipher(secret, scope, key)
        .encrypt(Nonce::from_slice(&nonce), plaintext.as_slice())
        .map_err(|_| anyhow::anyhow!("sealing an idempotent response"))?;
    Ok([nonce.as_slice(), sealed.as_slice()].concat())
}

fn open(secret: &[u8; 32], scope: &str, key: &str, sealed: &[u8]) -> anyhow::Result<StoredResponse> {
    anyhow::ensure!(sealed.len() > 12, "a sealed response is too short");
    let (nonce, ciphertext) = sealed.split_at(12);
    let plaintext = cipher(secret, scope, key)
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

/// Without credentials, the key is all that binds a retry to the first
/// request (whose answer can hold a new API key): it must be unguessable.
fn is_random_uuid(key: &str) -> bool {
    Uuid::try_parse(key).is_ok_and(|uuid| uuid.get_version_num() == 4)
}

async fn handle(state: AppState, key: String, request: Request, next: Next) -> Result<Response, ApiError> {
    if key.is_empty() || key.len() > 255 {
        return Err(ApiError::validation("Idempotency-Key", "must be 1 to 255 characters"));
    }
    let scope = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(sha256_hex);
    if scope.is_none() && !is_random_uuid(&key) {
        return Err(ApiError::validation(
            "Idempotency-Key",
            "a request without credentials must use a random UUID (version 4) as its key: the key alone \
             lets a retry have the first answer, which can hold a new API key",
        ));
    }
    let scope = scope.unwrap_or_else(|| "anonymous".into());
    let secret = state.signer.derive_secret("idempotency-keys");
    let key_hash = hex::encode(derive(&secret, "key", &scope, &key));
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

    let lease = state.settings.http.idempotency_lease();
    let created_at = match store::claim(&state.pool, &scope, &key_hash, &fingerprint, lease).await? {
        Claim::Run { created_at, .. } => created_at,
        Claim::Taken(entry) => return answer_taken(&state, &secret, &scope, &key, &fingerprint, entry),
    };

    // Keep the key while the request runs; a crash stops this, and a retry
    // takes the key over once the lease has passed.
    let heartbeat = {
        let (pool, scope, key_hash) = (state.pool.clone(), scope.clone(), key_hash.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(lease / 3).await;
                if let Err(error) = store::extend(&pool, &scope, &key_hash, lease).await {
                    tracing::warn!(error = %error, "extending an idempotency lease failed");
                }
            }
        })
    };
    let seed = derive(&secret, "seed", &scope, &key);
    let attempt = Attempt::new(key_hash.clone(), seed, created_at);
    let response = attempt
        .run(next.run(Request::from_parts(parts, Body::from(bytes))))
        .await;
    heartbeat.abort();
    let (parts, body) = response.into_parts();
    let bytes = to_bytes(body, usize::MAX)
        .await
        .map_err(|e| ApiError::Internal(anyhow::anyhow!(e)))?;
    if parts.status.is_server_error() {
        // A failure on our side, possibly after a commit: a retry completes
        // the request (what committed is found in the log, not run again).
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
            &seal(&secret, &scope, &key, &stored)?,
        )
        .await?;
    }
    Ok(Response::from_parts(parts, Body::from(bytes)))
}

/// The key is another request's: its answer replayed, 422 for a different
/// request, or 409 while it still runs.
fn answer_taken(
    state: &AppState,
    secret: &[u8; 32],
    scope: &str,
    key: &str,
    fingerprint: &str,
    entry: Entry,
) -> Result<Response, ApiError> {
    if entry.fingerprint != fingerprint {
        return Err(ApiError::Unprocessable(
            "this Idempotency-Key was used for a different request".into(),
        ));
    }
    if let (Some(_), Some(sealed)) = (entry.response_status, entry.response) {
        return Ok(replay(open(secret, scope, key, &sealed)?));
    }
    let wait = entry
        .locked_until
        .map_or(1, |until| (until - state.clock.now()).num_seconds().clamp(1, 3600));
    let mut response =
        ApiError::Conflict("a request with this Idempotency-Key is still in progress; retry after a moment".into())
            .into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(wait as u64));
    Ok(response)
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
