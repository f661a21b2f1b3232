//! `/org/{org}/datasets...` and `/org/{org}/capabilities...`: push (multipart, one part per file named by
//! its relative path), list, show, and file download.

use axum::Json;
use axum::extract::{Multipart, Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use dn_registry::{FileReceiver, Upload, validate_relative_path};
use dn_types::{
    ArtifactKind, CapabilityList, CapabilityManifest, CapabilityPushResult, DatasetList,
    DatasetManifest, DatasetPushResult, validate_name, validate_version,
};

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::Caller;

/// A received upload, with the directory its large files were spooled to (deleted when dropped, so keep
/// it until the push is done).
struct Received {
    upload: Upload,
    _spool: tempfile::TempDir,
}

/// Reads every part of a multipart upload: each part's file name is the file's relative path. Parts are
/// read chunk by chunk; files over `SPOOL_ABOVE` go to a temporary directory instead of memory.
async fn read_upload(mut multipart: Multipart, limit: u64) -> ApiResult<Received> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("upload too large: the limit is {limit} bytes (max_upload_bytes)"),
        )
    };
    let spool = tempfile::Builder::new()
        .prefix("dn-upload-")
        .tempdir()
        .map_err(|e| ApiError::internal("cannot create a spool directory for the upload", e))?;
    let mut files = Vec::new();
    let mut total: u64 = 0;
    loop {
        let mut field = match multipart.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => return Err(too_large()),
            Err(e) => {
                return Err(ApiError::validation(format!(
                    "multipart upload: {}",
                    e.body_text()
                )));
            }
        };
        let path = field
            .file_name()
            .or(field.name())
            .map(str::to_owned)
            .ok_or_else(|| ApiError::validation("multipart upload: a part has no file name"))?;
        // Checked before anything of it is written anywhere.
        validate_relative_path(&path)?;
        let mut receiver = FileReceiver::new(path.clone(), spool.path(), files.len());
        loop {
            let chunk = match field.chunk().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => return Err(too_large()),
                Err(e) => {
                    return Err(ApiError::validation(format!(
                        "multipart upload of '{path}': {}",
                        e.body_text()
                    )));
                }
            };
            total += chunk.len() as u64;
            if total > limit {
                return Err(too_large());
            }
            receiver.push(&chunk).await?;
        }
        files.push(receiver.finish().await?);
    }
    Ok(Received {
        upload: Upload::new(files, limit)?,
        _spool: spool,
    })
}

pub(crate) fn check_ref(name: &str, version: &str) -> ApiResult<()> {
    validate_name(name).map_err(|m| ApiError::validation(format!("name '{name}': {m}")))?;
    validate_version(version).map_err(|m| ApiError::validation(format!("version '{version}': {m}")))
}

fn pushed<T: serde::Serialize>(created: bool, body: T) -> impl IntoResponse {
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    (status, Json(body))
}

#[utoipa::path(
    post, path = "/org/{org}/datasets", tag = "datasets",
    params(("org" = String, Path)),
    request_body(content_type = "multipart/form-data", description = "one part per file; file name = relative path; dataset.yaml required"),
    responses((status = 201, body = DatasetPushResult), (status = 200, body = DatasetPushResult, description = "identical content already pushed"),
              (status = 409, body = dn_types::ErrorBody), (status = 413, body = dn_types::ErrorBody), (status = 422, body = dn_types::ErrorBody))
)]
pub async fn push_dataset(
    State(app): State<AppState>,
    caller: Caller,
    Path(org): Path<String>,
    multipart: Multipart,
) -> ApiResult<impl IntoResponse> {
    caller.require_org(&org)?;
    let received = read_upload(multipart, app.registry.max_upload_bytes()).await?;
    let result = app.registry.push_dataset(&org, &received.upload).await?;
    Ok(pushed(result.created, result))
}

#[utoipa::path(
    get, path = "/org/{org}/datasets", tag = "datasets",
    params(("org" = String, Path)), responses((status = 200, body = DatasetList))
)]
pub async fn list_datasets(
    State(app): State<AppState>,
    caller: Caller,
    Path(org): Path<String>,
) -> ApiResult<Json<DatasetList>> {
    caller.require_org(&org)?;
    Ok(Json(DatasetList {
        items: app.registry.list_datasets(&org).await?,
    }))
}

#[utoipa::path(
    get, path = "/org/{org}/datasets/{name}/{version}", tag = "datasets",
    params(("org" = String, Path), ("name" = String, Path), ("version" = String, Path)),
    responses((status = 200, body = DatasetManifest), (status = 404, body = dn_types::ErrorBody))
)]
pub async fn get_dataset(
    State(app): State<AppState>,
    caller: Caller,
    Path((org, name, version)): Path<(String, String, String)>,
) -> ApiResult<Json<DatasetManifest>> {
    caller.require_org(&org)?;
    check_ref(&name, &version)?;
    Ok(Json(app.registry.dataset(&org, &name, &version).await?))
}

#[utoipa::path(
    post, path = "/org/{org}/capabilities", tag = "capabilities",
    params(("org" = String, Path)),
    request_body(content_type = "multipart/form-data", description = "one part per file; file name = relative path; capability.yaml and agents/*.md"),
    responses((status = 201, body = CapabilityPushResult), (status = 200, body = CapabilityPushResult, description = "identical content already pushed"),
              (status = 409, body = dn_types::ErrorBody), (status = 413, body = dn_types::ErrorBody), (status = 422, body = dn_types::ErrorBody))
)]
pub async fn push_capability(
    State(app): State<AppState>,
    caller: Caller,
    Path(org): Path<String>,
    multipart: Multipart,
) -> ApiResult<impl IntoResponse> {
    caller.require_org(&org)?;
    let received = read_upload(multipart, app.registry.max_upload_bytes()).await?;
    let result = app.registry.push_capability(&org, &received.upload).await?;
    Ok(pushed(result.created, result))
}

#[utoipa::path(
    get, path = "/org/{org}/capabilities", tag = "capabilities",
    params(("org" = String, Path)), responses((status = 200, body = CapabilityList))
)]
pub async fn list_capabilities(
    State(app): State<AppState>,
    caller: Caller,
    Path(org): Path<String>,
) -> ApiResult<Json<CapabilityList>> {
    caller.require_org(&org)?;
    Ok(Json(CapabilityList {
        items: app.registry.list_capabilities(&org).await?,
    }))
}

#[utoipa::path(
    get, path = "/org/{org}/capabilities/{name}/{version}", tag = "capabilities",
    params(("org" = String, Path), ("name" = String, Path), ("version" = String, Path)),
    responses((status = 200, body = CapabilityManifest), (status = 404, body = dn_types::ErrorBody))
)]
pub async fn get_capability(
    State(app): State<AppState>,
    caller: Caller,
    Path((org, name, version)): Path<(String, String, String)>,
) -> ApiResult<Json<CapabilityManifest>> {
    caller.require_org(&org)?;
    check_ref(&name, &version)?;
    Ok(Json(app.registry.capability(&org, &name, &version).await?))
}

async fn file(
    app: &AppState,
    caller: &Caller,
    kind: ArtifactKind,
    (org, name, version, path): (String, String, String, String),
) -> ApiResult<impl IntoResponse + use<>> {
    caller.require_org(&org)?;
    check_ref(&name, &version)?;
    validate_relative_path(&path)?;
    let (size, stream) = app
        .registry
        .file(kind, &org, &name, &version, &path)
        .await?;
    Ok(crate::routes::file_response(size, stream))
}

#[utoipa::path(
    get, path = "/org/{org}/datasets/{name}/{version}/files/{*path}", tag = "datasets",
    params(("org" = String, Path), ("name" = String, Path), ("version" = String, Path), ("path" = String, Path)),
    responses((status = 200, description = "the file's bytes"), (status = 404, body = dn_types::ErrorBody))
)]
pub async fn dataset_file(
    State(app): State<AppState>,
    caller: Caller,
    Path(parts): Path<(String, String, String, String)>,
) -> ApiResult<impl IntoResponse> {
    file(&app, &caller, ArtifactKind::Dataset, parts).await
}

#[utoipa::path(
    get, path = "/org/{org}/capabilities/{name}/{version}/files/{*path}", tag = "capabilities",
    params(("org" = String, Path), ("name" = String, Path), ("version" = String, Path), ("path" = String, Path)),
    responses((status = 200, description = "the file's bytes"), (status = 404, body = dn_types::ErrorBody))
)]
pub async fn capability_file(
    State(app): State<AppState>,
    caller: Caller,
    Path(parts): Path<(String, String, String, String)>,
) -> ApiResult<impl IntoResponse> {
    file(&app, &caller, ArtifactKind::Capability, parts).await
}
