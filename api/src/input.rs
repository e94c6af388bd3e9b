//! Input refused at the edge, in one place, before any handler or store
//! sees it: a NUL character anywhere in the path, the query or a JSON body
//! (PostgreSQL refuses NUL in text and JSON, so it would otherwise surface
//! as a 500 deep inside a query), and a body over the size limit (413, as
//! problem+json for every route, the Stripe webhook included).

use crate::error::{ApiError, FieldError};
use crate::state::AppState;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, LengthLimitError, Limited};

pub async fn layer(State(state): State<AppState>, request: Request, next: Next) -> Response {
    match check(&state, request).await {
        Ok(request) => next.run(request).await,
        Err(error) => error.into_response(),
    }
}

async fn check(state: &AppState, request: Request) -> Result<Request, ApiError> {
    let (parts, body) = request.into_parts();
    if has_encoded_nul(parts.uri.path()) {
        return Err(nul("path"));
    }
    if parts.uri.query().is_some_and(has_encoded_nul) {
        return Err(nul("query"));
    }
    let limit = state.settings.http.max_body_bytes;
    let bytes: Bytes = match Limited::new(body, limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) if error.downcast_ref::<LengthLimitError>().is_some() => return Err(ApiError::PayloadTooLarge),
        Err(error) => {
            return Err(ApiError::BadRequest(format!(
                "the request body could not be read: {error}"
            )));
        }
    };
    if json_has_nul(&bytes) {
        return Err(nul("body"));
    }
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

fn nul(field: &str) -> ApiError {
    ApiError::Validation(vec![FieldError {
        field: field.into(),
        message: "must not contain the NUL character (U+0000)".into(),
    }])
}

/// `%00` is the only way a NUL reaches a path or a query.
fn has_encoded_nul(text: &str) -> bool {
    text.as_bytes().windows(3).any(|w| w == b"%00")
}

/// A `\u0000` escape in JSON text (escapes occur only inside strings), or a
/// raw NUL byte. Other escapes are skipped whole, so `\\u0000` (a backslash
/// followed by the text `u0000`) is not mistaken for one.
fn json_has_nul(bytes: &[u8]) -> bool {
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            0 => return true,
            b'\\' => {
                if bytes.get(i + 1) == Some(&b'u') && bytes.get(i + 2..i + 6).is_some_and(|hex| hex == b"0000") {
                    return true;
                }
                i += 2;
            }
            _ => i += 1,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_escapes_are_found_and_escaped_backslashes_are_not() {
        assert!(json_has_nul(br#"{"alias": "a\u0000b"}"#));
        assert!(json_has_nul(b"{\"alias\": \"a\0\"}"));
        assert!(
            !json_has_nul(br#"{"alias": "a\\u0000b"}"#),
            "an escaped backslash, then text"
        );
        assert!(
            json_has_nul(br#"{"alias": "a\\\u0000b"}"#),
            "an escaped backslash, then a NUL escape"
        );
        assert!(!json_has_nul(br#"{"alias": "a\u0001", "name": "\"u0000\""}"#));
        assert!(has_encoded_nul("/v1/tenants?actor=a%00b"));
        assert!(!has_encoded_nul("/v1/tenants?actor=a%2500b"));
    }
}
