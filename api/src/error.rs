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
    /// Plan problems: the limited metric, its use and limit (402)...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metric: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub used: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    /// ...or the feature the tier lacks and the cheapest tier that has it (403).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feature: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub required_tier: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upgrade_url: Option<String>,
}

/// Where 402/403 problems send people to upgrade (set from settings at start).
pub static UPGRADE_URL: std::sync::OnceLock<String> = std::sync::OnceLock::new();

fn upgrade_url() -> String {
    UPGRADE_URL
        .get()
        .cloned()
        .unwrap_or_else(|| "http://127.0.0.1:8080/billing/upgrade".into())
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
    /// A plan limit: 402 with the metric, its use and the limit.
    #[error("the plan allows {limit} {metric}; {used} are in use")]
    PlanLimit { metric: String, used: u64, limit: u64 },
    /// A feature the tier lacks: 403 with the tier that has it.
    #[error("{feature} needs the {required_tier} tier or above")]
    PlanFeature { feature: String, required_tier: String },
    #[error("{detail}")]
    RateLimited { detail: String, retry_after_secs: u64 },
    #[error("the tenant already runs {per_tenant} exports or verifications at once; retry when one ends")]
    TooManyStreams { per_tenant: usize, retry_after_secs: u64 },
    #[error("{0}")]
    Upstream(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
    /// Not an error: the write is committed, but the read models have not
    /// shown it within the wait. 202 with the resource's `Location` (and the
    /// commit's position) instead of a stale or missing view.
    #[error("the change is committed; it shows at {location} as soon as the read models reach position {position}")]
    Accepted { location: String, position: i64 },
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
            Self::PlanLimit { .. } => (S::PAYMENT_REQUIRED, "plan-limit", "Plan limit reached"),
            Self::PlanFeature { .. } => (S::FORBIDDEN, "plan-feature", "Not included in the plan"),
            Self::RateLimited { .. } => (S::TOO_MANY_REQUESTS, "rate-limited", "Too many requests"),
            Self::TooManyStreams { .. } => (S::TOO_MANY_REQUESTS, "too-many-streams", "Too many long reads at once"),
            Self::Upstream(_) => (S::BAD_GATEWAY, "upstream", "Upstream service failed"),
            Self::Internal(_) => (S::INTERNAL_SERVER_ERROR, "internal", "Internal server error"),
            Self::Accepted { .. } => (S::ACCEPTED, "accepted", "Accepted"),
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
                TenantError::LimitReached { metric, used, limit } => Self::PlanLimit {
                    metric: metric.into(),
                    used,
                    limit,
                },
            },
            CommandError::CloudAccounts(error) => {
                use coverwatch_domain::cloud::CloudAccountsError as E;
                match error {
                    E::NotFound(what) => Self::NotFound(what.into()),
                    E::Conflict(message) => Self::Conflict(message),
                    E::LimitReached { used, limit } => Self::PlanLimit {
                        metric: "cloud_accounts".into(),
                        used,
                        limit,
                    },
                    E::Rule(message) => Self::Unprocessable(message),
                    E::Unchanged => Self::Conflict("nothing to change".into()),
                }
            }
            CommandError::Inventory(error) => {
                use coverwatch_domain::scan::inventory::InventoryError as E;
                match error {
                    E::OtherAccount => Self::Conflict(error.to_string()),
                    E::Rule(message) => Self::Unprocessable(message),
                }
            }
            CommandError::CloudOrganization(error) => {
                use coverwatch_domain::cloud::CloudOrganizationError as E;
                match error {
                    E::NotFound(what) => Self::NotFound(what.into()),
                    E::Conflict(message) => Self::Conflict(message),
                    E::Rule(message) => Self::Unprocessable(message),
                    E::FeatureNotInPlan { feature, required_tier } => Self::PlanFeature {
                        feature: feature.into(),
                        required_tier: required_tier.to_string(),
                    },
                }
            }
            CommandError::Detection(error) => {
                use coverwatch_domain::detection::DetectionError as E;
                match error {
                    E::NotFound => Self::NotFound("detection".into()),
                    E::AlreadyRegistered => Self::Conflict(error.to_string()),
                    E::VersionMismatch { .. } => Self::PreconditionFailed(error.to_string()),
                    E::Retired => Self::Gone(error.to_string()),
                    E::Rule(message) => Self::Unprocessable(message),
                    E::FeatureNotInPlan { feature, required_tier } => Self::PlanFeature {
                        feature: feature.into(),
                        required_tier: required_tier.to_string(),
                    },
                }
            }
            CommandError::Subscription(error) => {
                use coverwatch_domain::subscription::SubscriptionError as E;
                match error {
                    E::NotFound => Self::NotFound("subscription".into()),
                    E::AlreadyExists | E::Conflict(_) => Self::Conflict(error.to_string()),
                    E::Rule(message) => Self::Unprocessable(message),
                    E::OverTargetLimit { .. } => Self::Unprocessable(format!("the plan change is refused: {error}")),
                    E::BillingNotConfigured => Self::Unavailable(error.to_string()),
                    E::Gateway(message) => Self::Upstream(format!("Stripe refused the change: {message}")),
                }
            }
            CommandError::Conflict => {
                Self::Conflict("the resource was changed by a concurrent request; read it again and retry".into())
            }
            CommandError::Diverged => Self::Conflict(CommandError::Diverged.to_string()),
            CommandError::Unexpected(error) => Self::Internal(error),
        }
    }
}

impl From<coverwatch_commands::workflows::connect_members::ConnectError> for ApiError {
    fn from(error: coverwatch_commands::workflows::connect_members::ConnectError) -> Self {
        use coverwatch_commands::workflows::connect_members::ConnectError as E;
        match error {
            E::UnknownMember(account_id) => Self::NotFound(format!("member account {account_id}")),
            E::Command(error) => error.into(),
        }
    }
}

impl From<coverwatch_commands::services::billing::BillingError> for ApiError {
    fn from(error: coverwatch_commands::services::billing::BillingError) -> Self {
        use coverwatch_commands::services::billing::BillingError as E;
        match error {
            E::NotConfigured => Self::Unavailable("billing is not configured on this server".into()),
            E::Command(error) => error.into(),
            E::Webhook(error) => Self::BadRequest(error.to_string()),
            E::Upstream(message) => Self::Upstream(message),
        }
    }
}

/// What a 202 for a committed write says.
#[derive(Debug, Serialize, ToSchema)]
pub struct AcceptedWrite {
    /// `accepted`.
    pub status: &'static str,
    pub detail: String,
    /// Where the resource will show (also the `Location` header).
    pub location: String,
    /// The commit's position in the log: the read models show the change
    /// once their checkpoint (`GET /readyz`) reaches it.
    pub position: i64,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Self::Accepted { location, position } = &self {
            let body = AcceptedWrite {
                status: "accepted",
                detail: self.to_string(),
                location: location.clone(),
                position: *position,
            };
            let mut response = (StatusCode::ACCEPTED, axum::Json(body)).into_response();
            if let Ok(value) = HeaderValue::from_str(location) {
                response.headers_mut().insert(header::LOCATION, value);
            }
            return response;
        }
        let (status, kind, title) = self.parts();
        let detail = match &self {
            Self::Internal(error) => {
                tracing::error!(error = ?error, "request failed");
                "an internal error occurred; it has been logged".to_owned()
            }
            other => other.to_string(),
        };
        let retry_after = match &self {
            Self::RateLimited { retry_after_secs, .. } | Self::TooManyStreams { retry_after_secs, .. } => {
                Some(*retry_after_secs)
            }
            _ => None,
        };
        let mut problem = Problem {
            kind: ApiError::type_uri(kind),
            title: title.into(),
            status: status.as_u16(),
            detail,
            errors: vec![],
            metric: None,
            used: None,
            limit: None,
            feature: None,
            required_tier: None,
            upgrade_url: None,
        };
        match self {
            Self::Validation(errors) => problem.errors = errors,
            Self::PlanLimit { metric, used, limit } => {
                problem.metric = Some(metric);
                problem.used = Some(used);
                problem.limit = Some(limit);
                problem.upgrade_url = Some(upgrade_url());
            }
            Self::PlanFeature { feature, required_tier } => {
                problem.feature = Some(feature);
                problem.required_tier = Some(required_tier);
                problem.upgrade_url = Some(upgrade_url());
            }
            _ => {}
        }
        let mut response = (status, axum::Json(problem)).into_response();
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
