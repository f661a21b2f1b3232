//! The single mapping from every library error to an HTTP status, a stable code and a `detail` message
//! (the field the reference SDK reads).

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use dn_types::ErrorBody;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub detail: String,
    /// Seconds a client should wait before trying again (`Retry-After`), on answers that mean "not now".
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            detail: detail.into(),
            retry_after: None,
        }
    }

    /// This answer with a `Retry-After` of `seconds`.
    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", detail)
    }

    pub fn validation(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "validation_error", detail)
    }

    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
    }

    /// A server-side failure: the details (paths, database messages) go to the server log under an
    /// incident id, the client gets the id only.
    pub(crate) fn internal(what: &str, error: impl std::fmt::Display) -> Self {
        let incident = &uuid::Uuid::new_v4().simple().to_string()[..12];
        tracing::error!(error = %error, incident, "{what}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            format!("{what} (incident {incident}: the server log has the details)"),
        )
    }
}

/// How long a client is told to wait when the database or storage is unavailable.
pub(crate) const UNAVAILABLE_RETRY_AFTER: u64 = 5;

impl ApiError {
    /// 503 with Retry-After: `what` (the job store, storage) is down or overloaded; the request may work
    /// in a moment. The cause goes to the server log.
    pub(crate) fn unavailable(what: &str, error: &dyn std::fmt::Display) -> Self {
        tracing::warn!(error = %error, "{what} unavailable");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!("{what} is unavailable right now; retry in a few seconds"),
        )
        .retry_after(UNAVAILABLE_RETRY_AFTER)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            detail: self.detail,
            code: self.code.to_owned(),
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(seconds),
            );
        }
        response
    }
}

impl From<dn_types::Error> for ApiError {
    fn from(e: dn_types::Error) -> Self {
        ApiError::validation(e.to_string())
    }
}

impl From<dn_store::Error> for ApiError {
    fn from(e: dn_store::Error) -> Self {
        use dn_store::Error as E;
        match e {
            E::NotFound(_) => ApiError::not_found(e.to_string()),
            E::Conflict(_) | E::LeaseLost { .. } => {
                ApiError::new(StatusCode::CONFLICT, "conflict", e.to_string())
            }
            other if other.is_unavailable() => ApiError::unavailable("the job store", &other),
            other => ApiError::internal("job store error", other),
        }
    }
}

impl From<dn_registry::Error> for ApiError {
    fn from(e: dn_registry::Error) -> Self {
        use dn_registry::Error as E;
        match e {
            E::NotFound { .. } | E::FileNotFound { .. } | E::CheckpointNotFound { .. } => {
                ApiError::not_found(e.to_string())
            }
            E::Conflict { .. } => ApiError::new(StatusCode::CONFLICT, "conflict", e.to_string()),
            E::Invalid { .. } => ApiError::validation(e.to_string()),
            E::TooLarge { .. } => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                e.to_string(),
            ),
            // Storage answered with an error after its retries (unreachable, refusing, 5xx).
            E::Storage(error) => ApiError::unavailable("storage", &error),
            other => ApiError::internal("storage error", other),
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
