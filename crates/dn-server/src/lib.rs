//! The `dn` control plane: the reference platform's training-job routes (under `/api/v1`, and at the root),
//! registries of datasets and capabilities, API-key auth per organization, the catalog, health and OpenAPI,
//! and the web console at `/` (`routes::console`).
//!
//! `router(state)` builds the app; `serve(listener, state, shutdown)` runs it, so tests start servers
//! in-process on `127.0.0.1:0`.
//!
//! `error` is the single error -> HTTP status + code + `detail` mapping (the database or storage away -> 503
//! with `Retry-After`); `extract` holds the `Caller` extractor (API key -> organization) and JSON and query
//! extractors that name the offending field (and the `Idempotency-Key` header). `/health` is liveness,
//! `/health/ready` checks the store and storage, each within 2 s. A failed or cancelled job's artifacts are
//! completed with the checkpoints storage holds for it. `catalog`: the configured models, refused at startup
//! if of a family dn cannot train, plus the trainable models of the server's hub cache, described again at
//! each listing; `catalog_only` limits jobs to it, otherwise any hub id passes. OpenAPI through utoipa;
//! `/metrics` from the store's aggregates; `routes/checkpoints` lists and streams a job's committed
//! checkpoint files from storage; `routes/stream` serves a job's log as server-sent events, resumable by
//! position. `routes/console` is the web console: `console/`'s page, script and style embedded with
//! `include_str!`, served at `/` and `/console/` under a Content-Security-Policy that allows only those
//! files; the script is plain DOM code that puts every API value on the page as text, keeps the key in the
//! tab's session storage and sends it as a header, reads the log stream with `fetch` (EventSource cannot send
//! headers) and draws the loss chart as SVG; `/whoami` names the key's organization for its sign-in,
//! `/org/{org}/workspaces` the workspaces of its picker. `routes/preview` is the dataset viewer's route: it
//! checks the organization, the dataset, that the model is in the catalog and the limits, then hands the
//! rendering to the `DatasetPreviewer` the binary supplies (`dn serve`'s runs `dn_worker::preview_dataset`,
//! the job's own preparation in the memory-limited child process, so the server renders nothing users
//! pushed). `listen` is the accept loop: hyper's HTTP/1.1 connection builder with a timer, a cap on open
//! connections, a header timeout that also closes idle keep-alive connections, a per-key cap on requests in
//! flight, accept errors waited out, the fd limit raised.

mod catalog;
mod error;
mod extract;
mod listen;
mod routes;

use std::future::Future;
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use dn_registry::Registry;
use dn_store::prelude::*;
use dn_types::SftDefaults;
use tokio::net::TcpListener;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use catalog::Catalog;
pub use error::ApiError;
pub use listen::ServerLimits;
pub use routes::meta::ApiDoc;
pub use routes::preview::{DatasetPreviewer, PreviewJob};

/// Everything a request handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn JobStore>,
    pub registry: Registry,
    pub catalog: Arc<Catalog>,
    pub defaults: SftDefaults,
    /// Renders the dataset viewer's previews (`None`: the route answers 503).
    pub previewer: Option<Arc<dyn DatasetPreviewer>>,
}

/// The API's routes, each declared once: a handler's `#[utoipa::path]` gives both its axum route and its
/// OpenAPI entry (paths relative to the API root; a `{*rest}` segment is axum's wildcard). Undocumented
/// routes (aliases, the metrics and the document itself) are plain axum routes.
fn api_routes(upload_limit: usize) -> OpenApiRouter<AppState> {
    use routes::{checkpoints, jobs, meta, preview, registry, stream};
    // Multipart framing adds a little to the files themselves; the registry enforces the exact limit.
    let uploads = OpenApiRouter::new()
        .routes(routes!(registry::push_dataset, registry::list_datasets))
        .routes(routes!(
            registry::push_capability,
            registry::list_capabilities
        ))
        .layer(DefaultBodyLimit::max(upload_limit.saturating_add(1 << 20)));
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(meta::health))
        .routes(routes!(meta::ready))
        .routes(routes!(meta::catalog))
        .routes(routes!(meta::whoami))
        .routes(routes!(meta::workspaces))
        .routes(routes!(jobs::create_job, jobs::list_jobs))
        .routes(routes!(jobs::get_job))
        .routes(routes!(jobs::cancel_job))
        .routes(routes!(jobs::retry_job))
        .routes(routes!(jobs::job_logs))
        .routes(routes!(stream::stream_logs))
        .routes(routes!(jobs::job_artifacts))
        .routes(routes!(checkpoints::checkpoint_files))
        .routes(routes!(checkpoints::checkpoint_file))
        .routes(routes!(registry::get_dataset))
        .routes(routes!(preview::preview_dataset))
        .routes(routes!(registry::dataset_file))
        .routes(routes!(registry::get_capability))
        .routes(routes!(registry::capability_file))
        .merge(uploads)
        .route("/health/live", get(meta::health))
        .route("/metrics", get(meta::metrics))
        .route("/openapi.json", get(meta::openapi_json))
}

/// The OpenAPI document of [`api_routes`], its paths as the reference SDK calls them (under `/api/v1`)
/// and in OpenAPI's syntax (`{rest}` for axum's `{*rest}`).
pub fn openapi() -> utoipa::openapi::OpenApi {
    static DOCUMENT: OnceLock<utoipa::openapi::OpenApi> = OnceLock::new();
    DOCUMENT
        .get_or_init(|| {
            let (_, mut doc) = api_routes(0).split_for_parts();
            let paths = std::mem::take(&mut doc.paths.paths);
            doc.paths.paths = paths
                .into_iter()
                .map(|(path, item)| (format!("/api/v1{}", path.replace("{*", "{")), item))
                .collect();
            doc
        })
        .clone()
}

/// The routes, served under `/api/v1` (where the reference SDK looks) and at the root, and the console.
pub fn router(state: AppState) -> Router {
    let upload_limit = usize::try_from(state.registry.max_upload_bytes()).unwrap_or(usize::MAX);
    let (api, _) = api_routes(upload_limit).split_for_parts();
    let api = api
        .fallback(|| async { ApiError::not_found("no such route") })
        .with_state(state);
    Router::new()
        .route("/", get(routes::console::index))
        .route("/console/{file}", get(routes::console::file))
        .nest("/api/v1", api.clone())
        .merge(api)
}

/// Serves until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with_limits(listener, state, ServerLimits::default(), shutdown).await
}

/// [`serve`] with these connection and request limits.
pub async fn serve_with_limits(
    listener: TcpListener,
    state: AppState,
    limits: ServerLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    listen::serve_app(listener, router(state), limits, shutdown).await
}
