//! HTTP failures: a fixed status, a stable machine-readable code, a human message.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::error::Error;

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
    pub code: &'static str,
    /// What went wrong, for people.
    pub message: String,
    /// Field-level errors and other structured detail.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
}

/// An error response.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    body: ErrorBody,
}

impl ApiError {
    /// An error with `status`, `code` and `message`.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
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
        Self::new(StatusCode::BAD_REQUEST, "validation_failed", message)
            .with_details(serde_json::json!({ "fields": fields }))
    }

    /// 404 for a resource that does not exist.
    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", what)
    }

    /// The status code.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body)).into_response()
    }
}

impl From<Error> for ApiError {
    fn from(err: Error) -> Self {
        match err {
            Error::NotFound(id) => Self::not_found(format!("no job {id}")),
            Error::PayloadTooLarge { queue, size, limit } => Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the payload is {size} bytes; queue `{queue}` accepts at most {limit}"),
            ),
            Error::WrongState { id, state } => Self::new(
                StatusCode::CONFLICT,
                "wrong_state",
                format!("job {id} is {state}"),
            ),
            Error::Unknown { kind, name } => Self::not_found(format!("no {kind} named `{name}`")),
            Error::InvalidJson(e) => {
                Self::new(StatusCode::BAD_REQUEST, "invalid_json", e.to_string())
            }
            Error::LeaseLost(id) => Self::new(
                StatusCode::CONFLICT,
                "lease_lost",
                format!("job {id} changed hands"),
            ),
            other => {
                // Store failures are logged with their cause; the client gets no internals.
                tracing::error!(error = %other, "request failed");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    "the job store is unavailable; retry later",
                )
            }
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
                StatusCode::BAD_REQUEST,
                "invalid_query",
                rejection.body_text(),
            )),
        }
    }
}
