//! `/org/{org}/ws/{ws}/training/jobs...`: create, list, get, cancel, retry, logs, artifacts.

use axum::Json;
use axum::extract::{Path, State};
use dn_store::{JobFilter, NewJob};
use dn_types::{
    ArtifactRef, CapabilitySnapshot, CreateTinkerSftJobRequest, JobStatus, TrainingJob,
    TrainingJobArtifacts, TrainingJobList, TrainingJobLogList, validate_name, validate_sft_request,
};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiQuery, Caller, IdempotencyKey};
use axum::response::{IntoResponse, Response};

/// Checks the caller may act in `org` and that `ws` is a valid workspace name.
pub(crate) fn scope(caller: &Caller, org: &str, ws: &str) -> ApiResult<()> {
    caller.require_org(org)?;
    validate_name(ws).map_err(|m| ApiError::validation(format!("workspace '{ws}': {m}")))
}

/// A ref's organization must be the caller's: other organizations' artifacts read as not found.
fn ref_org<'a>(
    caller: &'a Caller,
    r: &'a ArtifactRef,
    kind: &str,
    field: &str,
) -> ApiResult<&'a str> {
    let org = r.org_or(&caller.org);
    if org != caller.org {
        return Err(ApiError::not_found(format!(
            "{field}: {kind} {r} not found"
        )));
    }
    Ok(org)
}

#[utoipa::path(
    post, path = "/org/{org}/ws/{ws}/training/jobs", tag = "training",
    params(("org" = String, Path), ("ws" = String, Path)),
    params(("Idempotency-Key" = Option<String>, Header,
             description = "A retried create with the same key (24 hours) returns the job the first one made, with Idempotent-Replayed: true")),
    request_body = CreateTinkerSftJobRequest,
    responses((status = 200, body = TrainingJob), (status = 404, body = dn_types::ErrorBody),
              (status = 409, body = dn_types::ErrorBody), (status = 422, body = dn_types::ErrorBody),
              (status = 503, body = dn_types::ErrorBody))
)]
pub async fn create_job(
    State(app): State<AppState>,
    caller: Caller,
    Path((org, ws)): Path<(String, String)>,
    IdempotencyKey(idempotency_key): IdempotencyKey,
    ApiJson(request): ApiJson<CreateTinkerSftJobRequest>,
) -> ApiResult<Response> {
    scope(&caller, &org, &ws)?;
    let fingerprint = request_fingerprint(&ws, &request);
    let spec = validate_sft_request(&request, &app.defaults)?;
    let (catalog, model) = (app.catalog.clone(), spec.model.clone());
    tokio::task::spawn_blocking(move || catalog.check_model(&model))
        .await
        .map_err(|e| ApiError::internal("model check", e))?
        .map_err(|m| ApiError::validation(format!("model: {m}")))?;
    for (field, dataset) in spec.config.dataset_refs() {
        let owner = ref_org(&caller, dataset, "dataset", &field)?;
        app.registry
            .dataset(owner, &dataset.name, &dataset.version)
            .await
            .map_err(|e| match e {
                dn_registry::Error::NotFound { .. } => {
                    ApiError::not_found(format!("{field}: dataset {dataset} not found"))
                }
                other => other.into(),
            })?;
    }
    let cap = &spec.capability;
    let owner = ref_org(&caller, cap, "capability", "capability_ref")?;
    let manifest = app
        .registry
        .capability(owner, &cap.name, &cap.version)
        .await
        .map_err(|e| match e {
            dn_registry::Error::NotFound { .. } => {
                ApiError::not_found(format!("capability_ref: capability {cap} not found"))
            }
            other => other.into(),
        })?;
    let job = NewJob {
        organization_id: org,
        workspace_id: ws,
        name: spec.name,
        model: spec.model,
        project_ref: spec.project_ref,
        run_ref: spec.run_ref,
        dataset_ref: spec.config.dataset.as_ref().map(ArtifactRef::to_wire),
        trajectory_dataset_refs: spec
            .config
            .trajectory_datasets
            .iter()
            .map(ArtifactRef::to_wire)
            .collect(),
        capability: CapabilitySnapshot {
            artifact_id: Some(manifest.digest.clone()),
            name: cap.wire_name(),
            version: cap.version.clone(),
            runtime_digest: None,
            organization_id: Some(manifest.organization_id.clone()),
            content_digest: Some(manifest.digest.clone()),
            system_prompt_digest: Some(manifest.system_prompt_digest.clone()),
        },
        config: spec.config.to_map(),
        tags: spec.tags,
    };
    let Some(key) = idempotency_key else {
        return Ok(Json(app.store.create_job(job).await?).into_response());
    };
    let (job, created) = app.store.create_job_once(job, &key, &fingerprint).await?;
    let mut response = Json(job).into_response();
    if !created {
        response.headers_mut().insert(
            "idempotent-replayed",
            axum::http::HeaderValue::from_static("true"),
        );
    }
    Ok(response)
}

/// What makes two creates the same request: the workspace and the body as parsed.
fn request_fingerprint(ws: &str, request: &CreateTinkerSftJobRequest) -> String {
    use sha2::{Digest, Sha256};
    let body = serde_json::to_string(request).unwrap_or_default();
    let digest = Sha256::new()
        .chain_update(ws.as_bytes())
        .chain_update([0u8])
        .chain_update(body.as_bytes())
        .finalize();
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// 1-based page number (default 1).
    page: Option<i64>,
    /// Jobs per page, 1 to 100 (default 20).
    page_size: Option<i64>,
    status: Option<String>,
    backend: Option<String>,
    trainer_type: Option<String>,
    project_ref: Option<String>,
}

#[utoipa::path(
    get, path = "/org/{org}/ws/{ws}/training/jobs", tag = "training",
    params(("org" = String, Path), ("ws" = String, Path), ListParams),
    responses((status = 200, body = TrainingJobList))
)]
pub async fn list_jobs(
    State(app): State<AppState>,
    caller: Caller,
    Path((org, ws)): Path<(String, String)>,
    ApiQuery(params): ApiQuery<ListParams>,
) -> ApiResult<Json<TrainingJobList>> {
    scope(&caller, &org, &ws)?;
    let page = params.page.unwrap_or(1);
    if page < 1 {
        return Err(ApiError::validation(format!(
            "page: must be >= 1 (got {page})"
        )));
    }
    let page_size = params.page_size.unwrap_or(20);
    if !(1..=100).contains(&page_size) {
        return Err(ApiError::validation(format!(
            "page_size: must be between 1 and 100 (got {page_size})"
        )));
    }
    let status = params
        .status
        .as_deref()
        .map(str::parse::<JobStatus>)
        .transpose()
        .map_err(|m| ApiError::validation(format!("status: {m}")))?;
    let filter = JobFilter {
        organization_id: org,
        workspace_id: ws,
        status,
        backend: params.backend,
        trainer_type: params.trainer_type,
        project_ref: params.project_ref,
        page: u32::try_from(page).unwrap_or(u32::MAX),
        page_size: page_size as u32,
    };
    let (items, total) = app.store.list_jobs(&filter).await?;
    Ok(Json(TrainingJobList {
        items,
        total,
        page,
        page_size,
    }))
}

#[utoipa::path(
    get, path = "/org/{org}/ws/{ws}/training/jobs/{id}", tag = "training",
    params(("org" = String, Path), ("ws" = String, Path), ("id" = String, Path)),
    responses((status = 200, body = TrainingJob), (status = 404, body = dn_types::ErrorBody))
)]
pub async fn get_job(
    State(app): State<AppState>,
    caller: Caller,
    Path((org, ws, id)): Path<(String, String, String)>,
) -> ApiResult<Json<TrainingJob>> {
    scope(&caller, &org, &ws)?;
    Ok(Json(app.store.get_job(&org, &ws, &id).await?))
}

#[utoipa::path(
    post, path = "/org/{org}/ws/{ws}/training/jobs/{id}/cancel", tag = "training",
    params(("org" = String, Path), ("ws" = String, Path), ("id" = String, Path)),
    responses((status = 200, body = TrainingJob), (status = 404, body = dn_types::ErrorBody),
              (status = 409, body = dn_types::ErrorBody))
)]
pub async fn cancel_job(
    State(app): State<AppState>,
    caller: Caller,
    Path((org, ws, id)): Path<(String, String, String)>,
) -> ApiResult<Json<TrainingJob>> {
    scope(&caller, &org, &ws)?;
    Ok(Json(app.store.cancel_job(&org, &ws, &id).await?))
}

#[utoipa::path(
    post, path = "/org/{org}/ws/{ws}/training/jobs/{id}/retry", tag = "training",
    params(("org" = String, Path), ("ws" = String, Path), ("id" = String, Path)),
    responses((status = 200, body = TrainingJob), (status = 404, body = dn_types::ErrorBody),
              (status = 409, body = dn_types::ErrorBody))
)]
pub async fn retry_job(
    State(app): State<AppState>,
    caller: Caller,
    Path((org, ws, id)): Path<(String, String, String)>,
) -> ApiResult<Json<TrainingJob>> {
    scope(&caller, &org, &ws)?;
    Ok(Json(app.store.retry_job(&org, &ws, &id).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogParams {
    /// Only entries after this position (the `data.seq` of the last entry seen).
    pub(crate) after: Option<i64>,
}

#[utoipa::path(
    get, path = "/org/{org}/ws/{ws}/training/jobs/{id}/logs", tag = "training",
    params(("org" = String, Path), ("ws" = String, Path), ("id" = String, Path), LogParams),
    responses((status = 200, body = TrainingJobLogList), (status = 404, body = dn_types::ErrorBody))
)]
pub async fn job_logs(
    State(app): State<AppState>,
    caller: Caller,
    Path((org, ws, id)): Path<(String, String, String)>,
    ApiQuery(params): ApiQuery<LogParams>,
) -> ApiResult<Json<TrainingJobLogList>> {
    scope(&caller, &org, &ws)?;
    let stored = app
        .store
        .list_logs(&org, &ws, &id, params.after.unwrap_or(0))
        .await?;
    let items = stored
        .into_iter()
        .map(|s| {
            let mut entry = s.entry;
            entry.data.insert("seq".into(), s.seq.into());
            entry.data.insert("attempt".into(), s.attempt.into());
            entry
        })
        .collect();
    Ok(Json(TrainingJobLogList { items }))
}

#[utoipa::path(
    get, path = "/org/{org}/ws/{ws}/training/jobs/{id}/artifacts", tag = "training",
    params(("org" = String, Path), ("ws" = String, Path), ("id" = String, Path)),
    responses((status = 200, body = TrainingJobArtifacts), (status = 404, body = dn_types::ErrorBody))
)]
pub async fn job_artifacts(
    State(app): State<AppState>,
    caller: Caller,
    Path((org, ws, id)): Path<(String, String, String)>,
) -> ApiResult<Json<TrainingJobArtifacts>> {
    scope(&caller, &org, &ws)?;
    let job = app.store.get_job(&org, &ws, &id).await?;
    let mut artifacts = job.artifacts;
    // An attempt that failed (or a job the reaper failed) may not have recorded the checkpoints earlier
    // attempts committed: storage has them, and they stay the user's to download or resume from.
    if matches!(job.status, JobStatus::Failed | JobStatus::Cancelled) {
        match app.registry.committed_checkpoints(&org, &id).await {
            Ok(names) => merge_committed(&app.registry, &org, &id, &names, &mut artifacts),
            Err(e) => {
                tracing::warn!(job = %id, error = %e, "cannot list the job's committed checkpoints")
            }
        }
    }
    Ok(Json(TrainingJobArtifacts { artifacts }))
}

/// `artifacts.checkpoints` as the committed `names` in storage, keeping the recorded entries.
fn merge_committed(
    registry: &dn_registry::Registry,
    org: &str,
    job_id: &str,
    names: &[String],
    artifacts: &mut serde_json::Map<String, serde_json::Value>,
) {
    if names.is_empty() {
        return;
    }
    let recorded = artifacts
        .get("checkpoints")
        .and_then(|c| c.as_array())
        .cloned()
        .unwrap_or_default();
    let checkpoints = names
        .iter()
        .map(|name| {
            recorded
                .iter()
                .find(|c| c["name"] == name.as_str())
                .cloned()
                .unwrap_or_else(|| {
                    let step = name
                        .strip_prefix("step-")
                        .and_then(|n| n.parse::<u64>().ok());
                    let uri =
                        registry.uri(&dn_registry::Registry::checkpoint_prefix(org, job_id, name));
                    serde_json::json!({"name": name, "step": step, "uri": uri})
                })
        })
        .collect();
    artifacts.insert("checkpoints".into(), serde_json::Value::Array(checkpoints));
}
