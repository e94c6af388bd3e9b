//! What auditors use (owner, admin and auditor): the raw event stream with
//! hashes, a tenant's state as of an instant, verification of its history,
//! the audit log as a streamed export, and the public audit key.

use super::{Page, limit};
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiPath, ApiQuery};
use crate::state::AppState;
use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use coverwatch_domain::ids::TenantId;
use coverwatch_domain::values::Role;
use coverwatch_projections::StoredEvent;
use coverwatch_projections::audit::{AuditRow, queries as audit};
use coverwatch_projections::event::tenant_events_page;
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Events strictly after this global position (the `next_cursor` of the previous page).
    pub after_position: Option<i64>,
    pub limit: Option<i64>,
}

/// An event as the log holds it, with its chain hashes.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventView {
    pub position: i64,
    pub event_id: Uuid,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    pub recorded_at: DateTime<Utc>,
    pub tenant_id: Option<Uuid>,
    pub payload: serde_json::Value,
    pub metadata: serde_json::Value,
    pub prev_hash: String,
    pub hash: String,
}

impl From<StoredEvent> for EventView {
    fn from(e: StoredEvent) -> Self {
        Self {
            position: e.position,
            event_id: e.event_id,
            aggregate_type: e.aggregate_type,
            aggregate_id: e.aggregate_id,
            sequence: e.sequence,
            event_type: e.event_type,
            event_version: e.event_version,
            recorded_at: e.recorded_at,
            tenant_id: e.tenant_id.map(Into::into),
            payload: e.payload,
            metadata: e.metadata,
            prev_hash: e.prev_hash,
            hash: e.hash,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AsOfQuery {
    /// An RFC 3339 instant; default now.
    pub as_of: Option<DateTime<Utc>>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ExportQuery {
    /// `csv` or `jsonl` (default).
    pub format: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PublicKey {
    pub algorithm: &'static str,
    /// The raw 32-byte Ed25519 public key, hex.
    pub public_key: String,
    /// The same key as a PEM SubjectPublicKeyInfo (for openssl).
    pub pem: String,
}

async fn auditor(state: &AppState, principal: &Principal, headers: &HeaderMap, tenant_id: TenantId) -> ApiResult<()> {
    let member = principal.in_tenant(tenant_id, state, headers).await?;
    member.require(
        Role::can_read_audit,
        "only an owner, admin or auditor reads the history",
    )
}

/// The tenant's raw events in global order, with their hashes.
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/events", tag = "audit",
    params(("tenant_id" = Uuid, Path), EventsQuery), security(("api_key" = [])),
    responses((status = 200, body = Page<EventView>), (status = 403, body = crate::error::Problem)))]
pub async fn events(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    ApiPath(tenant_id): ApiPath<TenantId>,
    ApiQuery(query): ApiQuery<EventsQuery>,
) -> ApiResult<Json<Page<EventView>>> {
    auditor(&state, &principal, &headers, tenant_id).await?;
    let limit = limit(query.limit)?;
    let rows = tenant_events_page(&state.pool, tenant_id, query.after_position.unwrap_or(0), limit + 1).await?;
    let (items, next_cursor) = super::page(rows, limit, |e| e.position.to_string());
    Ok(Json(Page {
        items: items.into_iter().map(EventView::from).collect(),
        next_cursor,
    }))
}

/// The tenant as it was at `as_of` (profile, members, invitations, API keys,
/// and the aggregate's own state), folded from the events up to then.
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/state", tag = "audit",
    params(("tenant_id" = Uuid, Path), AsOfQuery), security(("api_key" = [])),
    responses((status = 200, description = "The reconstructed state", content_type = "application/json"),
              (status = 404, body = crate::error::Problem)))]
pub async fn state_as_of(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    ApiPath(tenant_id): ApiPath<TenantId>,
    ApiQuery(query): ApiQuery<AsOfQuery>,
) -> ApiResult<Json<serde_json::Value>> {
    auditor(&state, &principal, &headers, tenant_id).await?;
    let as_of = query.as_of.unwrap_or_else(Utc::now);
    let _permit = state.streaming.admit(tenant_id)?;
    let reconstructed = state
        .streaming
        .bounded(async { Ok(coverwatch_replay::state::tenant_as_of(&state.streaming.pool, tenant_id, as_of).await?) })
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("tenant as of {as_of}")))?;
    Ok(Json(serde_json::to_value(reconstructed).map_err(anyhow::Error::from)?))
}

/// Verify the tenant's history: hash chains, signed digest checkpoints and
/// aggregate heads. `ok` is false with the first divergence otherwise.
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/verify", tag = "audit",
    params(("tenant_id" = Uuid, Path)), security(("api_key" = [])),
    responses((status = 200, description = "The verification report", content_type = "application/json")))]
pub async fn verify(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    ApiPath(tenant_id): ApiPath<TenantId>,
) -> ApiResult<Json<serde_json::Value>> {
    auditor(&state, &principal, &headers, tenant_id).await?;
    let _permit = state.streaming.admit(tenant_id)?;
    let report = state
        .streaming
        .bounded(async {
            let public_key = Some(state.signer.public_key_hex());
            Ok(coverwatch_replay::verify::verify_log(&state.streaming.pool, Some(tenant_id), public_key).await?)
        })
        .await?;
    let mut value = serde_json::to_value(&report).map_err(anyhow::Error::from)?;
    value["ok"] = serde_json::Value::Bool(report.ok());
    Ok(Json(value))
}

const CSV_HEADER: &str = "position,event_id,recorded_at,actor,action,resource_type,resource_id,request_id,correlation_id,causation_id,client_ip,user_agent,impersonated_by,summary\n";

/// One CSV cell. A cell a spreadsheet would evaluate as a formula (leading
/// `=`, `+`, `-`, `@`, tab or carriage return: attacker-controlled text such
/// as a User-Agent or a name ends up here) is neutralised with a leading
/// apostrophe, as OWASP's CSV-injection guidance says; cells with
/// separators, quotes or line breaks are quoted.
fn csv_field(value: &str) -> String {
    let neutralised = if value.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{value}")
    } else {
        value.to_owned()
    };
    if neutralised.contains([',', '"', '\n', '\r', '\t']) {
        format!("\"{}\"", neutralised.replace('"', "\"\""))
    } else {
        neutralised
    }
}

fn csv_line(row: &AuditRow) -> String {
    let optional = |v: &Option<String>| csv_field(v.as_deref().unwrap_or(""));
    format!(
        "{},{},{},{},{},{},{},{},{},{},{},{},{},{}\n",
        row.position,
        row.event_id,
        row.recorded_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        csv_field(&row.actor),
        csv_field(&row.action),
        csv_field(&row.resource_type),
        csv_field(&row.resource_id),
        csv_field(&row.request_id),
        csv_field(&row.correlation_id),
        csv_field(&row.causation_id),
        optional(&row.client_ip),
        optional(&row.user_agent),
        optional(&row.impersonated_by),
        csv_field(&row.summary),
    )
}

/// The audit log as CSV or JSON Lines, oldest first, streamed row by row
/// (constant memory however long it is).
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/audit-log/export", tag = "audit",
    params(("tenant_id" = Uuid, Path), ExportQuery), security(("api_key" = [])),
    responses((status = 200, description = "text/csv or application/x-ndjson", content_type = "text/csv")))]
pub async fn export_audit_log(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    ApiPath(tenant_id): ApiPath<TenantId>,
    ApiQuery(query): ApiQuery<ExportQuery>,
) -> ApiResult<Response> {
    auditor(&state, &principal, &headers, tenant_id).await?;
    let csv = match query.format.as_deref() {
        None | Some("jsonl") => false,
        Some("csv") => true,
        Some(_) => return Err(ApiError::validation("format", "must be csv or jsonl")),
    };
    // Admitted before answering, so the client learns of the bound (429)
    // rather than getting a stream that never starts.
    let permit = state.streaming.admit(tenant_id)?;
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(32);
    let streaming = state.streaming.clone();
    tokio::spawn(async move {
        let _permit = permit;
        let deadline = tokio::time::Instant::now() + streaming.limit;
        // A line waits for the client at most `idle`, and the whole export
        // ends at `limit`: a client that stops reading frees its connection.
        let send = |item: Result<Bytes, std::io::Error>| {
            let sender = &sender;
            let wait = streaming
                .idle
                .min(deadline.saturating_duration_since(tokio::time::Instant::now()));
            async move { matches!(tokio::time::timeout(wait, sender.send(item)).await, Ok(Ok(()))) }
        };
        if csv && !send(Ok(Bytes::from_static(CSV_HEADER.as_bytes()))).await {
            return;
        }
        let mut rows = audit::export(&streaming.pool, tenant_id, query.from, query.to);
        loop {
            let Ok(next) = tokio::time::timeout_at(deadline, rows.try_next()).await else {
                tracing::info!(%tenant_id, "audit export stopped at the time limit");
                return;
            };
            let line = match next {
                Ok(Some(row)) if csv => csv_line(&row),
                Ok(Some(row)) => match serde_json::to_string(&row) {
                    Ok(json) => json + "\n",
                    Err(error) => {
                        send(Err(std::io::Error::other(error))).await;
                        return;
                    }
                },
                Ok(None) => return,
                Err(error) => {
                    tracing::error!(error = %error, "audit export failed");
                    send(Err(std::io::Error::other("export failed"))).await;
                    return;
                }
            };
            if !send(Ok(Bytes::from(line))).await {
                tracing::info!(%tenant_id, "audit export abandoned: the client stopped reading or the time limit passed");
                return;
            }
        }
    });
    let stream = futures::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|item| (item, receiver))
    });
    let (content_type, extension) = if csv {
        ("text/csv; charset=utf-8", "csv")
    } else {
        ("application/x-ndjson", "jsonl")
    };
    let file_name = format!(
        "coverwatch-audit-{tenant_id}-{}.{extension}",
        state.clock.now().format("%Y%m%dT%H%M%SZ")
    );
    let mut response = Body::from_stream(stream).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_str(&format!("attachment; filename=\"{file_name}\""))
            .expect("ids and digits are a valid header"),
    );
    Ok(response)
}

/// The Ed25519 key that signs digest checkpoints and audit bundles.
#[utoipa::path(get, path = "/v1/audit/public-key", tag = "audit", responses((status = 200, body = PublicKey)))]
pub async fn public_key(State(state): State<AppState>) -> Json<PublicKey> {
    Json(PublicKey {
        algorithm: "ed25519",
        public_key: state.signer.public_key_hex(),
        pem: state.signer.public_key_pem(),
    })
}

#[cfg(test)]
mod tests {
    use super::csv_field;

    #[test]
    fn formulas_are_neutralised_and_separators_quoted() {
        assert_eq!(
            csv_field("=HYPERLINK(\"http://x\")"),
            "\"'=HYPERLINK(\"\"http://x\"\")\""
        );
        assert_eq!(csv_field("+1+1"), "'+1+1");
        assert_eq!(csv_field("-2"), "'-2");
        assert_eq!(csv_field("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(csv_field("\tx"), "\"'\tx\"");
        assert_eq!(csv_field("\rx"), "\"'\rx\"");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("member:1"), "member:1");
    }
}
