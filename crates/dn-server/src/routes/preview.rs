//! The dataset viewer: `POST /org/{org}/datasets/{name}/{version}/preview` renders the first rows of a
//! dataset with a catalog model's chat template and a capability's system prompt, token by token with
//! the supervised ones marked. The server checks the request and resolves the names; the rendering runs
//! in the [`DatasetPreviewer`] the binary provides (`dn serve`: the memory-limited preparation process,
//! as a worker prepares a job), never in the server's own process.

use async_trait::async_trait;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use dn_spec::TrainOn;
use dn_types::{DatasetManifest, DatasetPreview, DatasetPreviewRequest, validate_preview_request};

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, Caller};
use crate::routes::registry::check_ref;

/// What the previewer is asked: the dataset, the model's catalog id, the system prompt, the limits.
#[derive(Debug, Clone)]
pub struct PreviewJob {
    pub org: String,
    pub dataset: DatasetManifest,
    pub model: String,
    pub system_prompt: String,
    pub limit: usize,
    pub max_sequence_length: usize,
    pub train_on: TrainOn,
}

/// Renders a preview (implemented by the `dn` binary, which can start the preparation process).
#[async_trait]
pub trait DatasetPreviewer: Send + Sync {
    /// `Err`: why the rows cannot be shown (the model cannot load, the template ran past a limit).
    async fn preview(&self, job: PreviewJob) -> Result<DatasetPreview, String>;
}

#[utoipa::path(
    post, path = "/org/{org}/datasets/{name}/{version}/preview", tag = "datasets",
    params(("org" = String, Path), ("name" = String, Path), ("version" = String, Path)),
    request_body = DatasetPreviewRequest,
    responses((status = 200, body = DatasetPreview), (status = 404, body = dn_types::ErrorBody),
              (status = 422, body = dn_types::ErrorBody), (status = 503, body = dn_types::ErrorBody))
)]
pub async fn preview_dataset(
    State(app): State<AppState>,
    caller: Caller,
    Path((org, name, version)): Path<(String, String, String)>,
    ApiJson(request): ApiJson<DatasetPreviewRequest>,
) -> ApiResult<Json<DatasetPreview>> {
    caller.require_org(&org)?;
    check_ref(&name, &version)?;
    let spec =
        validate_preview_request(&request).map_err(|e| ApiError::validation(e.to_string()))?;
    let dataset = app.registry.dataset(&org, &name, &version).await?;
    let system_prompt = match &spec.capability {
        None => String::new(),
        Some(reference) => {
            app.registry
                .capability(&org, &reference.name, &reference.version)
                .await?
                .system_prompt
        }
    };
    // Only a model of the catalog: the server reads nothing else a request names.
    let catalog = app.catalog.clone();
    let models = tokio::task::spawn_blocking(move || catalog.models())
        .await
        .map_err(|e| ApiError::internal("catalog", e))?;
    if !models.iter().any(|m| m.tinker_id == spec.model) {
        return Err(ApiError::validation(format!(
            "model: {:?} is not in this server's catalog (GET /training/catalog)",
            spec.model
        )));
    }
    let Some(previewer) = app.previewer.clone() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "dataset preview is not available on this server",
        ));
    };
    let job = PreviewJob {
        org,
        dataset,
        model: spec.model,
        system_prompt,
        limit: spec.limit,
        max_sequence_length: spec.max_sequence_length,
        train_on: spec.train_on,
    };
    previewer
        .preview(job)
        .await
        .map(Json)
        .map_err(|e| ApiError::validation(format!("preview: {e}")))
}
