//! Health, the training catalog, and the OpenAPI document.

use axum::Json;
use axum::extract::State;
use dn_types::{HealthResponse, TrainingCatalogResponse, WhoAmI, WorkspaceList};
use serde::Deserialize;
use utoipa::{IntoParams, OpenApi};

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiQuery, Caller};

/// Liveness: the process answers (also `/health/live`). Says nothing of the database or storage: a load
/// balancer routes by `/health/ready`.
#[utoipa::path(get, path = "/health", tag = "meta", responses((status = 200, body = HealthResponse)))]
pub async fn health() -> Json<HealthResponse> {
    Json(HealthResponse {
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
    })
}

/// How long readiness waits for each dependency.
const READINESS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Readiness: 200 when the job store and storage both answer within 2 s, else 503 (with Retry-After)
/// naming what failed. For load balancers and orchestrators; `/health` is liveness.
#[utoipa::path(
    get, path = "/health/ready", tag = "meta",
    responses((status = 200, body = ReadinessResponse), (status = 503, body = ReadinessResponse))
)]
pub async fn ready(State(state): State<AppState>) -> axum::response::Response {
    use axum::response::IntoResponse;
    let database = tokio::time::timeout(READINESS_TIMEOUT, state.store.ping());
    let storage = tokio::time::timeout(READINESS_TIMEOUT, state.registry.check_reachable());
    let (database, storage) = tokio::join!(database, storage);
    let describe = |result: Result<Result<(), String>, tokio::time::error::Elapsed>| match result {
        Ok(Ok(())) => "ok".to_owned(),
        Ok(Err(e)) => e,
        Err(_) => format!("no answer in {READINESS_TIMEOUT:?}"),
    };
    let checks = ReadinessChecks {
        database: describe(database.map(|r| r.map_err(|e| e.to_string()))),
        storage: describe(storage.map(|r| r.map_err(|e| e.to_string()))),
    };
    let ready = checks.database == "ok" && checks.storage == "ok";
    let body = ReadinessResponse {
        status: if ready { "ready" } else { "unavailable" }.into(),
        checks,
    };
    if ready {
        Json(body).into_response()
    } else {
        let mut response =
            (axum::http::StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
        response.headers_mut().insert(
            axum::http::header::RETRY_AFTER,
            axum::http::HeaderValue::from(crate::error::UNAVAILABLE_RETRY_AFTER),
        );
        response
    }
}

/// What `/health/ready` found.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ReadinessResponse {
    /// `ready` or `unavailable`.
    pub status: String,
    pub checks: ReadinessChecks,
}

/// Each dependency: `ok`, or why not.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ReadinessChecks {
    pub database: String,
    pub storage: String,
}

#[utoipa::path(
    get, path = "/whoami", tag = "meta",
    responses((status = 200, body = WhoAmI), (status = 401, body = dn_types::ErrorBody))
)]
/// The organization of the caller's key (the console's sign-in).
pub async fn whoami(caller: Caller) -> Json<WhoAmI> {
    Json(WhoAmI {
        organization: caller.org,
    })
}

#[utoipa::path(
    get, path = "/org/{org}/workspaces", tag = "meta", params(("org" = String, Path)),
    responses((status = 200, body = WorkspaceList), (status = 404, body = dn_types::ErrorBody))
)]
/// The workspaces that hold the organization's jobs (the console's workspace picker).
pub async fn workspaces(
    State(app): State<AppState>,
    caller: Caller,
    axum::extract::Path(org): axum::extract::Path<String>,
) -> ApiResult<Json<WorkspaceList>> {
    caller.require_org(&org)?;
    Ok(Json(WorkspaceList {
        items: app.store.list_workspaces(&org).await?,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CatalogParams {
    /// At most this many models (1 to 500, default 20).
    limit: Option<i64>,
    /// Case-insensitive substring of the id, name or family.
    query: Option<String>,
    family: Option<String>,
    algorithm: Option<String>,
    min_size_b: Option<f64>,
    max_size_b: Option<f64>,
}

#[utoipa::path(
    get, path = "/training/catalog", tag = "training", params(CatalogParams),
    responses((status = 200, body = TrainingCatalogResponse))
)]
pub async fn catalog(
    State(app): State<AppState>,
    _caller: Caller,
    ApiQuery(params): ApiQuery<CatalogParams>,
) -> ApiResult<Json<TrainingCatalogResponse>> {
    let limit = params.limit.unwrap_or(20);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::validation(format!(
            "limit: must be between 1 and 500 (got {limit})"
        )));
    }
    let query = params.query.map(|q| q.to_lowercase());
    // Described again at each listing (the hub cache may have grown): file reads, off the runtime.
    let catalog = app.catalog.clone();
    let models = tokio::task::spawn_blocking(move || catalog.models())
        .await
        .map_err(|e| ApiError::internal("catalog", e))?;
    let matching: Vec<_> = models
        .into_iter()
        .filter(|m| {
            query.as_ref().is_none_or(|q| {
                [&m.tinker_id, &m.display_name, &m.family]
                    .iter()
                    .any(|s| s.to_lowercase().contains(q))
            })
        })
        .filter(|m| params.family.as_ref().is_none_or(|f| &m.family == f))
        .filter(|m| {
            params
                .algorithm
                .as_ref()
                .is_none_or(|a| m.supported_algorithms.contains(a))
        })
        .filter(|m| params.min_size_b.is_none_or(|min| m.size_b >= min))
        .filter(|m| params.max_size_b.is_none_or(|max| m.size_b <= max))
        .collect();
    let total = matching.len() as i64;
    let models = matching.into_iter().take(limit as usize).collect();
    Ok(Json(TrainingCatalogResponse {
        models,
        total,
        limit,
    }))
}

#[derive(OpenApi)]
#[openapi(
    info(title = "dn", description = "Self-hosted supervised fine-tuning (LoRA) control plane. Every route \
        is also served without the /api/v1 prefix."),
    modifiers(&ApiKeyScheme),
    security(("api_key" = []), ("bearer" = []))
)]
pub struct ApiDoc;

struct ApiKeyScheme;

impl utoipa::Modify for ApiKeyScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{
            ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme,
        };
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

pub async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(crate::openapi())
}

/// Prometheus text format: jobs by status, ended attempts by outcome (incl. reaped leases as
/// `lease_expired`), the progress of running jobs, and lease renewals by the workers of every node.
/// Aggregates only (no job ids), so it needs no key.
pub async fn metrics(State(app): State<AppState>) -> ApiResult<impl axum::response::IntoResponse> {
    let stats = app.store.stats().await?;
    let mut out = String::new();
    out.push_str("# HELP dn_jobs Training jobs by status.\n# TYPE dn_jobs gauge\n");
    for status in ["queued", "running", "completed", "failed", "cancelled"] {
        let n = stats
            .jobs_by_status
            .iter()
            .find(|(s, _)| s == status)
            .map_or(0, |(_, n)| *n);
        out.push_str(&format!("dn_jobs{{status=\"{status}\"}} {n}\n"));
    }
    out.push_str(
        "# HELP dn_job_attempts_total Ended job attempts by outcome.\n# TYPE dn_job_attempts_total counter\n",
    );
    for (outcome, n) in &stats.attempts_by_outcome {
        out.push_str(&format!(
            "dn_job_attempts_total{{outcome=\"{outcome}\"}} {n}\n"
        ));
    }
    let reaped = stats
        .attempts_by_outcome
        .iter()
        .find(|(o, _)| o == "lease_expired")
        .map_or(0, |(_, n)| *n);
    out.push_str(&format!(
        "# HELP dn_reaped_leases_total Attempts whose lease expired (worker lost).\n\
         # TYPE dn_reaped_leases_total counter\ndn_reaped_leases_total {reaped}\n\
         # HELP dn_running_steps Optimizer steps done so far by running jobs.\n\
         # TYPE dn_running_steps gauge\ndn_running_steps {}\n\
         # HELP dn_running_tokens_per_second Training tokens per second of running jobs, summed.\n\
         # TYPE dn_running_tokens_per_second gauge\ndn_running_tokens_per_second {}\n\
         # HELP dn_lease_renewals_total Heartbeats that extended a lease, by any worker.\n\
         # TYPE dn_lease_renewals_total counter\ndn_lease_renewals_total {}\n",
        stats.running_steps, stats.running_tokens_per_second, stats.lease_renewals
    ));
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    ))
}
