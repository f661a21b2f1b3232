//! Extractors whose rejections are [`ApiError`]s: JSON bodies that name the offending field, query strings,
//! and the caller's organization from the API key.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use bytes::Bytes;
use serde::de::DeserializeOwned;

use crate::AppState;
use crate::error::ApiError;

/// A JSON body; unknown or mistyped fields are a 422 naming the field's path.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    format!(
                        "request body: {} (JSON bodies are at most 2 MiB)",
                        e.body_text()
                    ),
                )
            } else {
                ApiError::validation(format!("request body: {}", e.body_text()))
            }
        })?;
        let mut de = serde_json::Deserializer::from_slice(&bytes);
        serde_path_to_error::deserialize(&mut de)
            .map(ApiJson)
            .map_err(|e| {
                let path = e.path().to_string();
                if path == "." {
                    ApiError::validation(format!("request body: {}", e.inner()))
                } else {
                    ApiError::validation(format!("{path}: {}", e.inner()))
                }
            })
    }
}

/// A query string; bad parameters are a 422.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::try_from_uri(&parts.uri)
            .map(|q| ApiQuery(q.0))
            .map_err(|e| ApiError::validation(format!("query: {}", e.body_text())))
    }
}

/// The optional `Idempotency-Key` header of a create: 1 to 255 visible ASCII characters.
pub struct IdempotencyKey(pub Option<String>);

/// The longest `Idempotency-Key` accepted.
const MAX_IDEMPOTENCY_KEY: usize = 255;

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let Some(value) = parts.headers.get("idempotency-key") else {
            return Ok(IdempotencyKey(None));
        };
        let key = value
            .to_str()
            .ok()
            .filter(|k| {
                (1..=MAX_IDEMPOTENCY_KEY).contains(&k.len())
                    && k.bytes().all(|b| b.is_ascii_graphic())
            })
            .ok_or_else(|| {
                ApiError::validation(format!(
                    "header Idempotency-Key: 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters \
                     (a UUID is usual)"
                ))
            })?;
        Ok(IdempotencyKey(Some(key.to_owned())))
    }
}

/// The organization of the caller's API key (`X-API-Key: KEY` or `Authorization: Bearer KEY`).
pub struct Caller {
    pub org: String,
}

impl Caller {
    /// Requests for another organization's resources read as "not found", whether they exist or not.
    pub fn require_org(&self, org: &str) -> Result<(), ApiError> {
        if self.org == org {
            Ok(())
        } else {
            Err(ApiError::not_found(format!("organization {org} not found")))
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let key = api_key(&parts.headers)
            .map_err(|()| ApiError::unauthorized("invalid API key"))?
            .ok_or_else(|| {
                ApiError::unauthorized(
                    "missing API key: send X-API-Key: <key> or Authorization: Bearer <key>",
                )
            })?;
        match state.store.organization_for_key(key).await? {
            Some(org) => Ok(Caller { org }),
            None => Err(ApiError::unauthorized("invalid API key")),
        }
    }
}

/// The API key a request presents (`X-API-Key`, else `Authorization: Bearer`), not yet checked; `Err` for a
/// key header that is not visible ASCII (it cannot hold a key dn issued: invalid, not missing).
pub(crate) fn api_key(headers: &axum::http::HeaderMap) -> Result<Option<&str>, ()> {
    let header = |name: &str| headers.get(name).map(|v| v.to_str().map_err(|_| ()));
    let key = match header("x-api-key").transpose()? {
        Some(key) => Some(key.trim()),
        None => header("authorization")
            .transpose()?
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim),
    };
    Ok(key.filter(|k| !k.is_empty()))
}
