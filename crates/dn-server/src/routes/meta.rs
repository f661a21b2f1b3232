//! Health, the training catalog, and the OpenAPI document.

use axum::Json;
use axum::extract::State;
use dn_types::{HealthResponse, TrainingCatalogResponse};
use serde::Deserialize;
use utoipa::{IntoParams, OpenApi};

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiQuery, Caller};

#[utoipa::path(get, path = "/api/v1/health", tag = "meta", responses((status = 200, body = HealthResponse)))]
pub async fn health() -> Json<HealthResponse> {
    Json(HealthResponse {
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
    })
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
    get, path = "/api/v1/training/catalog", tag = "training", params(CatalogParams),
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
    let matching: Vec<_> = app
        .catalog
        .models()
        .iter()
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
        .cloned()
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
    paths(
        health, catalog,
        crate::routes::jobs::create_job, crate::routes::jobs::list_jobs, crate::routes::jobs::get_job,
        crate::routes::jobs::cancel_job, crate::routes::jobs::retry_job, crate::routes::jobs::job_logs,
        crate::routes::jobs::job_artifacts,
        crate::routes::registry::push_dataset, crate::routes::registry::list_datasets,
        crate::routes::registry::get_dataset, crate::routes::registry::dataset_file,
        crate::routes::registry::push_capability, crate::routes::registry::list_capabilities,
        crate::routes::registry::get_capability, crate::routes::registry::capability_file,
    ),
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
    Json(ApiDoc::openapi())
}
