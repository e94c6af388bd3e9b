//! The API's one error type and its `application/problem+json` rendering
//! (RFC 9457). Each problem has a stable `type`; 5xx are logged and their
//! details hidden.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use coverwatch_commands::CommandError;
use coverwatch_domain::tenant::TenantError;
use coverwatch_domain::values::InvalidValue;
use serde::Serialize;
use utoipa::ToSchema;

pub const PROBLEM_BASE: &str = "https://coverwatch.dev/problems/";

/// One invalid input field.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

/// An RFC 9457 problem document.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("invalid request: {0}")]
    BadRequest(String),
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    #[error("missing or invalid credentials")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PreconditionFailed(String),
    #[error("{0}")]
    Gone(String),
    #[error("the request body is larger than the server accepts")]
    PayloadTooLarge,
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    Unprocessable(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("this method is not allowed on this resource")]
    MethodNotAllowed,
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        use StatusCode as S;
        match self {
            Self::BadRequest(_) => (S::BAD_REQUEST, "bad-request", "Bad request"),
            Self::Validation(_) => (S::UNPROCESSABLE_ENTITY, "validation", "Invalid input"),
            Self::Unauthorized => (S::UNAUTHORIZED, "unauthorized", "Unauthorized"),
            Self::Forbidden(_) => (S::FORBIDDEN, "forbidden", "Forbidden"),
            Self::NotFound(_) => (S::NOT_FOUND, "not-found", "Not found"),
            Self::Conflict(_) => (S::CONFLICT, "conflict", "Conflict"),
            Self::PreconditionFailed(_) => (S::PRECONDITION_FAILED, "precondition-failed", "Precondition failed"),
            Self::Gone(_) => (S::GONE, "gone", "Gone"),
            Self::PayloadTooLarge => (S::PAYLOAD_TOO_LARGE, "payload-too-large", "Payload too large"),
            Self::UnsupportedMediaType(_) => (
                S::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
            ),
            Self::Unprocessable(_) => (S::UNPROCESSABLE_ENTITY, "rule-violated", "Business rule violated"),
            Self::MethodNotAllowed => (S::METHOD_NOT_ALLOWED, "method-not-allowed", "Method not allowed"),
            Self::Unavailable(_) => (S::SERVICE_UNAVAILABLE, "unavailable", "Service unavailable"),
            Self::Internal(_) => (S::INTERNAL_SERVER_ERROR, "internal", "Internal server error"),
        }
    }

    pub fn validation(field: &str, message: impl Into<String>) -> Self {
        Self::Validation(vec![FieldError {
            field: field.into(),
            message: message.into(),
        }])
    }

    /// The problem type URI for a kind (also used by tests and docs).
    pub fn type_uri(kind: &str) -> String {
        format!("{PROBLEM_BASE}{kind}")
    }
}

impl From<InvalidValue> for ApiError {
    fn from(error: InvalidValue) -> Self {
        Self::validation(error.field, error.message)
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        Self::Internal(anyhow::Error::new(error).context("database"))
    }
}

impl From<CommandError> for ApiError {
    fn from(error: CommandError) -> Self {
        match error {
            CommandError::Tenant(error) => match error {
                TenantError::NotFound => Self::NotFound("tenant".into()),
                TenantError::AlreadyExists => Self::Conflict(error.to_string()),
                TenantError::Suspended => Self::Forbidden(error.to_string()),
                TenantError::Forbidden(message) => Self::Forbidden(message),
                TenantError::VersionMismatch { .. } => Self::PreconditionFailed(error.to_string()),
                TenantError::Conflict(message) => Self::Conflict(message),
                TenantError::Rule(message) => Self::Unprocessable(message),
                TenantError::NotFoundItem(what) => Self::NotFound(what.into()),
                TenantError::InvitationGone(_) => Self::Gone(error.to_string()),
            },
            CommandError::Conflict => {
                Self::Conflict("the resource was changed by a concurrent request; read it again and retry".into())
            }
            CommandError::Unexpected(error) => Self::Internal(error),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, kind, title) = self.parts();
        let detail = match &self {
            Self::Internal(error) => {
                tracing::error!(error = ?error, "request failed");
                "an internal error occurred; it has been logged".to_owned()
            }
            other => other.to_string(),
        };
        let errors = match self {
            Self::Validation(errors) => errors,
            _ => vec![],
        };
        let problem = Problem {
            kind: ApiError::type_uri(kind),
            title: title.into(),
            status: status.as_u16(),
            detail,
            errors,
        };
        let mut response = (status, axum::Json(problem)).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
