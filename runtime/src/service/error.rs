//! HTTP failures: a fixed status, a stable machine-readable code, a human message. The codes
//! are one enum, and what each domain error answers is decided here, once, for the JSON API and
//! the dashboard alike.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::control;
use crate::error::Error;

/// The stable, machine-readable code of an error response (`code` in its body). Each code has
/// one status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// 400: a path segment is not a job id.
    InvalidId,
    /// 400: the body is not JSON, or not the JSON expected.
    InvalidJson,
    /// 400: the query string is malformed.
    InvalidQuery,
    /// 400: fields of the body are invalid (see `details.fields`).
    ValidationFailed,
    /// 400: a destructive form was sent without its confirmation.
    NotConfirmed,
    /// 401: no API key, or not a valid one.
    Unauthorized,
    /// 403: the key lacks the scope the route needs.
    Forbidden,
    /// 403: a dashboard form's token does not match the browser's.
    Csrf,
    /// 404: no such job or route.
    NotFound,
    /// 404: the request names a queue this service does not serve.
    UnknownQueue,
    /// 405: the route does not take that method.
    MethodNotAllowed,
    /// 409: the job's state does not allow the operation.
    WrongState,
    /// 409: the job changed hands.
    LeaseLost,
    /// 409: the job to cancel had already ended.
    AlreadyFinished,
    /// 413: the body or payload is too large.
    PayloadTooLarge,
    /// 413: the payload is over the tenant's quota.
    QuotaPayload,
    /// 415: a POST not sent as `Content-Type: application/json`.
    UnsupportedMediaType,
    /// 429: over the key's rate limit.
    RateLimited,
    /// 429: over the tenant's quota of waiting jobs.
    QuotaQueued,
    /// 429: over the event streams the key, or the service, may have open.
    TooManyStreams,
    /// 500: the service is misconfigured.
    Internal,
    /// 503: the job store is unavailable.
    StoreUnavailable,
    /// 503: this process exports no metrics.
    MetricsUnavailable,
}

impl ErrorCode {
    /// The status every response with this code has.
    pub fn status(self) -> StatusCode {
        match self {
            Self::InvalidId
            | Self::InvalidJson
            | Self::InvalidQuery
            | Self::ValidationFailed
            | Self::NotConfirmed => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden | Self::Csrf => StatusCode::FORBIDDEN,
            Self::NotFound | Self::UnknownQueue => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::WrongState | Self::LeaseLost | Self::AlreadyFinished => StatusCode::CONFLICT,
            Self::PayloadTooLarge | Self::QuotaPayload => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::RateLimited | Self::QuotaQueued | Self::TooManyStreams => {
                StatusCode::TOO_MANY_REQUESTS
            }
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Self::StoreUnavailable | Self::MetricsUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The code as it appears in a body, e.g. `validation_failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidId => "invalid_id",
            Self::InvalidJson => "invalid_json",
            Self::InvalidQuery => "invalid_query",
            Self::ValidationFailed => "validation_failed",
            Self::NotConfirmed => "not_confirmed",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::Csrf => "csrf",
            Self::NotFound => "not_found",
            Self::UnknownQueue => "unknown_queue",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::WrongState => "wrong_state",
            Self::LeaseLost => "lease_lost",
            Self::AlreadyFinished => "already_finished",
            Self::PayloadTooLarge => "payload_too_large",
            Self::QuotaPayload => "quota_payload",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::RateLimited => "rate_limited",
            Self::QuotaQueued => "quota_queued",
            Self::TooManyStreams => "too_many_streams",
            Self::Internal => "internal",
            Self::StoreUnavailable => "store_unavailable",
            Self::MetricsUnavailable => "metrics_unavailable",
        }
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One field that failed validation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    /// Where in the body, e.g. `payload.values[2]`.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

/// The JSON body of every error response.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Stable code, e.g. `validation_failed`.
    #[schema(value_type = String)]
    pub code: ErrorCode,
    /// What went wrong, for people.
    pub message: String,
    /// Field-level errors and other structured detail.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
}

/// An error response.
#[derive(Debug)]
pub struct ApiError {
    body: ErrorBody,
}

impl ApiError {
    /// An error with `code` (and its status) and `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            body: ErrorBody {
                code,
                message: message.into(),
                details: None,
            },
        }
    }

    /// Adds structured detail.
    #[must_use]
    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.body.details = Some(details);
        self
    }

    /// 400 with field-level errors.
    pub fn validation(fields: Vec<FieldError>) -> Self {
        let message = match fields.as_slice() {
            [one] => format!("`{}`: {}", one.field, one.message),
            many => format!("{} fields are invalid", many.len()),
        };
        Self::new(ErrorCode::ValidationFailed, message)
            .with_details(serde_json::json!({ "fields": fields }))
    }

    /// 404 for a resource that does not exist.
    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, what)
    }

    /// The status code.
    pub fn status(&self) -> StatusCode {
        self.body.code.status()
    }

    /// The code.
    pub fn code(&self) -> ErrorCode {
        self.body.code
    }

    /// What went wrong, for people.
    pub fn message(&self) -> &str {
        &self.body.message
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = self.body.code;
        let mut response = (self.status(), axum::Json(self.body)).into_response();
        // Read by the request counter: refused submissions are counted by their code.
        response.extensions_mut().insert(code);
        response
    }
}

impl From<Error> for ApiError {
    fn from(err: Error) -> Self {
        match err {
            Error::NotFound(id) => Self::not_found(format!("no job {id}")),
            Error::PayloadTooLarge { queue, size, limit } => Self::new(
                ErrorCode::PayloadTooLarge,
                format!(
                    "the job is {size} bytes (payload, kind, headers and idempotency key); queue `{queue}` accepts at most {limit}"
                ),
            ),
            Error::WrongState { id, state } => {
                Self::new(ErrorCode::WrongState, format!("job {id} is {state}"))
            }
            Error::Unknown { kind, name } => Self::not_found(format!("no {kind} named `{name}`")),
            Error::InvalidJson(e) => Self::new(ErrorCode::InvalidJson, e.to_string()),
            Error::LeaseLost(id) => {
                Self::new(ErrorCode::LeaseLost, format!("job {id} changed hands"))
            }
            Error::QuotaQueued {
                queue,
                waiting,
                max,
            } => Self::new(
                ErrorCode::QuotaQueued,
                format!(
                    "this tenant has {waiting} jobs waiting in `{queue}` and may have at most {max}"
                ),
            ),
            other => {
                // Store failures are logged with their cause; the client gets no internals.
                tracing::error!(error = %other, "request failed");
                Self::new(
                    ErrorCode::StoreUnavailable,
                    "the job store is unavailable; retry later",
                )
            }
        }
    }
}

impl From<control::Error> for ApiError {
    fn from(err: control::Error) -> Self {
        match err {
            control::Error::Engine(err) => err.into(),
            control::Error::NotServed(queue) => {
                // The name is the client's own; it is cut short so a long one stays small.
                let shown: String = queue.chars().take(64).collect();
                let more = if shown.len() < queue.len() { "…" } else { "" };
                Self::new(
                    ErrorCode::UnknownQueue,
                    format!("no queue named `{shown}{more}` is served here"),
                )
            }
            control::Error::AlreadyFinished { id, state } => Self::new(
                ErrorCode::AlreadyFinished,
                format!("job {id} already {state}"),
            ),
        }
    }
}

/// Query parameters, with a malformed query answered as JSON (400 `invalid_query`) like every
/// other error, instead of axum's plain-text rejection.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Query<T>(pub(crate) T);

impl<T, S> axum::extract::FromRequestParts<S> for Query<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Self(value)),
            Err(rejection) => Err(ApiError::new(
                ErrorCode::InvalidQuery,
                rejection.body_text(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_serializes_as_its_string_and_answers_with_its_status() {
        for (code, text, status) in [
            (ErrorCode::ValidationFailed, "validation_failed", 400),
            (ErrorCode::Csrf, "csrf", 403),
            (ErrorCode::AlreadyFinished, "already_finished", 409),
            (ErrorCode::QuotaQueued, "quota_queued", 429),
            (ErrorCode::TooManyStreams, "too_many_streams", 429),
            (ErrorCode::StoreUnavailable, "store_unavailable", 503),
        ] {
            assert_eq!(serde_json::to_string(&code).unwrap(), format!("\"{text}\""));
            assert_eq!(code.to_string(), text);
            assert_eq!(code.status().as_u16(), status);
        }
    }
}
