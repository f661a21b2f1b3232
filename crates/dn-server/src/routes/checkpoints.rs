//! `.../training/jobs/{id}/checkpoints/{name}[/files/{path}]`: the files of a job's committed checkpoints
//! (PEFT adapter, optimizer state, trainer state), listed and downloaded through the API wherever storage
//! lives (a directory on the server or an S3 bucket). Downloads stream from storage.

use axum::Json;
use axum::extract::{Path, State};
use axum::response::IntoResponse;
use dn_types::CheckpointFileList;

use crate::AppState;
use crate::error::ApiResult;
use crate::extract::Caller;
use crate::routes::jobs::scope;

#[utoipa::path(
    get, path = "/org/{org}/ws/{ws}/training/jobs/{id}/checkpoints/{name}", tag = "training",
    params(("org" = String, Path), ("ws" = String, Path), ("id" = String, Path),
        ("name" = String, Path, description = "step-NNNNNN or final, as the job's artifacts list them")),
    responses((status = 200, body = CheckpointFileList), (status = 404, body = dn_types::ErrorBody))
)]
pub async fn checkpoint_files(
    State(app): State<AppState>,
    caller: Caller,
    Path((org, ws, id, name)): Path<(String, String, String, String)>,
) -> ApiResult<Json<CheckpointFileList>> {
    scope(&caller, &org, &ws)?;
    // Not found for other organizations' and workspaces' jobs, like every job route.
    let job = app.store.get_job(&org, &ws, &id).await?;
    let files = app
        .registry
        .checkpoint_files(&job.organization_id, &job.id, &name)
        .await?;
    Ok(Json(files))
}

#[utoipa::path(
    get, path = "/org/{org}/ws/{ws}/training/jobs/{id}/checkpoints/{name}/files/{path}",
    tag = "training",
    params(("org" = String, Path), ("ws" = String, Path), ("id" = String, Path), ("name" = String, Path),
        ("path" = String, Path, description = "a file name from the checkpoint's listing")),
    responses((status = 200, description = "the file's bytes"), (status = 404, body = dn_types::ErrorBody))
)]
pub async fn checkpoint_file(
    State(app): State<AppState>,
    caller: Caller,
    Path((org, ws, id, name, path)): Path<(String, String, String, String, String)>,
) -> ApiResult<impl IntoResponse> {
    scope(&caller, &org, &ws)?;
    let job = app.store.get_job(&org, &ws, &id).await?;
    let (size, stream) = app
        .registry
        .checkpoint_file(&job.organization_id, &job.id, &name, &path)
        .await?;
    Ok(crate::routes::file_response(size, stream))
}
