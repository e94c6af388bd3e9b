//! Extractors whose rejections are problem+json: JSON bodies (unknown fields,
//! wrong types, syntax and size all become clear 4xx), path ids and queries.

use crate::error::{ApiError, FieldError};
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

/// `axum::Json` with problem+json rejections.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::JsonDataError(error) => {
            // serde's message names the field path ("name: invalid type ...").
            let message = std::error::Error::source(&error)
                .map(ToString::to_string)
                .unwrap_or_else(|| error.body_text());
            let field = message
                .split_once(": ")
                .map(|(f, _)| f.to_owned())
                .unwrap_or_else(|| "body".into());
            ApiError::Validation(vec![FieldError { field, message }])
        }
        JsonRejection::JsonSyntaxError(error) => ApiError::BadRequest(format!("malformed JSON: {}", error.body_text())),
        JsonRejection::MissingJsonContentType(_) => {
            ApiError::UnsupportedMediaType("send the body as JSON with Content-Type: application/json".into())
        }
        JsonRejection::BytesRejection(error) if error.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::PayloadTooLarge
        }
        other => ApiError::BadRequest(other.body_text()),
    }
}

/// `axum::extract::Path` with problem+json rejections.
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Self(value)),
            Err(PathRejection::FailedToDeserializePathParams(error)) => Err(ApiError::BadRequest(format!(
                "invalid identifier in the path: {}",
                error.body_text()
            ))),
            Err(other) => Err(ApiError::BadRequest(other.body_text())),
        }
    }
}

/// `axum::extract::Query` with problem+json rejections.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Self(value)),
            Err(QueryRejection::FailedToDeserializeQueryString(error)) => Err(ApiError::Validation(vec![FieldError {
                field: "query".into(),
                message: error.body_text(),
            }])),
            Err(other) => Err(ApiError::BadRequest(other.body_text())),
        }
    }
}

pub use coverwatch_domain::values::double_option;
