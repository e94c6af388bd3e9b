//! HTTP routes, one file per resource, and the helpers they share (ETags,
//! validation that reports every bad field at once, cursors). A handler
//! authenticates and authorizes, parses, calls an application service or a
//! workflow, waits for the read models, and answers from a read model's
//! query: no SQL here.

pub mod admin;
pub mod admin_billing;
pub mod api_keys;
pub mod audit;
pub mod auditors;
pub mod billing;
pub mod cloud_accounts;
pub mod cloud_organizations;
pub mod coverage;
pub mod detections;
pub mod health;
pub mod invitations;
pub mod members;
pub mod metrics;
pub mod organization_members;
pub mod scans;
pub mod tenants;

use crate::error::{ApiError, ApiResult, FieldError};
use axum::http::{HeaderMap, HeaderValue, header};
use serde::Serialize;
use utoipa::ToSchema;

pub const DEFAULT_LIMIT: i64 = 50;
pub const MAX_LIMIT: i64 = 500;

/// The aggregate version as a strong ETag.
pub fn etag(version: impl std::fmt::Display) -> (header::HeaderName, HeaderValue) {
    let value = HeaderValue::from_str(&format!("\"{version}\"")).expect("digits are a valid header");
    (header::ETAG, value)
}

/// The version in `If-Match`, if the client sent one (`*` means any).
pub fn if_match(headers: &HeaderMap) -> ApiResult<Option<u64>> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| ApiError::validation("If-Match", "must be an ETag"))?
        .trim();
    if text == "*" {
        return Ok(None);
    }
    text.trim_start_matches("W/")
        .trim_matches('"')
        .parse()
        .map(Some)
        .map_err(|_| ApiError::validation("If-Match", "must be an ETag this API returned, such as \"3\""))
}

/// Collects field errors so a request hears about all of them at once.
#[derive(Default)]
pub struct Fields(Vec<FieldError>);

impl Fields {
    pub fn check<T, E: std::fmt::Display>(&mut self, field: &str, result: Result<T, E>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(error) => {
                let message = error.to_string();
                let message = message.split_once(": ").map(|(_, m)| m.to_owned()).unwrap_or(message);
                self.0.push(FieldError {
                    field: field.into(),
                    message,
                });
                None
            }
        }
    }

    pub fn check_opt<T, E: std::fmt::Display>(
        &mut self,
        field: &str,
        value: Option<&str>,
        parse: impl FnOnce(&str) -> Result<T, E>,
    ) -> Option<T> {
        value.and_then(|v| self.check(field, parse(v)))
    }

    pub fn finish(self) -> ApiResult<()> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ApiError::Validation(self.0))
        }
    }
}

/// Page size from a query, bounded.
pub fn limit(requested: Option<i64>) -> ApiResult<i64> {
    match requested {
        None => Ok(DEFAULT_LIMIT),
        Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::validation(
            "limit",
            format!("must be between 1 and {MAX_LIMIT}"),
        )),
    }
}

/// A cursor that is an id (lists ordered by time-ordered v7 ids).
pub fn uuid_cursor<T: From<uuid::Uuid>>(cursor: Option<&str>) -> ApiResult<Option<T>> {
    cursor
        .map(|c| {
            uuid::Uuid::try_parse(c)
                .map(T::from)
                .map_err(|_| ApiError::validation("cursor", "is not a cursor this API returned"))
        })
        .transpose()
}

/// Trims a fetched page of `limit + 1` rows and computes the next cursor.
pub fn page<T>(mut rows: Vec<T>, limit: i64, cursor_of: impl Fn(&T) -> String) -> (Vec<T>, Option<String>) {
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let next = if more { rows.last().map(cursor_of) } else { None };
    (rows, next)
}

/// `{items, next_cursor}`: the shape of every list response.
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T: ToSchema> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}
