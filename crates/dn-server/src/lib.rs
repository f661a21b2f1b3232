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
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use dn_registry::Registry;
use dn_store::JobStore;
use dn_types::SftDefaults;
use tokio::net::TcpListener;

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

/// The routes, served under `/api/v1` (where the reference SDK looks) and at the root.
pub fn router(state: AppState) -> Router {
    use routes::{checkpoints, console, jobs, meta, preview, registry, stream};
    // Multipart framing adds a little to the files themselves; the registry enforces the exact limit.
    let upload_limit = usize::try_from(state.registry.max_upload_bytes())
        .unwrap_or(usize::MAX)
        .saturating_add(1 << 20);
    let jobs_path = "/org/{org}/ws/{ws}/training/jobs";
    let api = Router::new()
        .route("/health", get(meta::health))
        .route("/health/live", get(meta::health))
        .route("/health/ready", get(meta::ready))
        .route("/metrics", get(meta::metrics))
        .route("/openapi.json", get(meta::openapi_json))
        .route("/training/catalog", get(meta::catalog))
        .route("/whoami", get(meta::whoami))
        .route("/org/{org}/workspaces", get(meta::workspaces))
        .route(jobs_path, post(jobs::create_job).get(jobs::list_jobs))
        .route(&format!("{jobs_path}/{{id}}"), get(jobs::get_job))
        .route(
            &format!("{jobs_path}/{{id}}/cancel"),
            post(jobs::cancel_job),
        )
        .route(&format!("{jobs_path}/{{id}}/retry"), post(jobs::retry_job))
        .route(&format!("{jobs_path}/{{id}}/logs"), get(jobs::job_logs))
        .route(
            &format!("{jobs_path}/{{id}}/logs/stream"),
            get(stream::stream_logs),
        )
        .route(
            &format!("{jobs_path}/{{id}}/artifacts"),
            get(jobs::job_artifacts),
        )
        .route(
            &format!("{jobs_path}/{{id}}/checkpoints/{{name}}"),
            get(checkpoints::checkpoint_files),
        )
        .route(
            &format!("{jobs_path}/{{id}}/checkpoints/{{name}}/files/{{path}}"),
            get(checkpoints::checkpoint_file),
        )
        .route(
            "/org/{org}/datasets",
            post(registry::push_dataset)
                .layer(DefaultBodyLimit::max(upload_limit))
                .get(registry::list_datasets),
        )
        .route(
            "/org/{org}/datasets/{name}/{version}",
            get(registry::get_dataset),
        )
        .route(
            "/org/{org}/datasets/{name}/{version}/preview",
            post(preview::preview_dataset),
        )
        .route(
            "/org/{org}/datasets/{name}/{version}/files/{*path}",
            get(registry::dataset_file),
        )
        .route(
            "/org/{org}/capabilities",
            post(registry::push_capability)
                .layer(DefaultBodyLimit::max(upload_limit))
                .get(registry::list_capabilities),
        )
        .route(
            "/org/{org}/capabilities/{name}/{version}",
            get(registry::get_capability),
        )
        .route(
            "/org/{org}/capabilities/{name}/{version}/files/{*path}",
            get(registry::capability_file),
        )
        .fallback(|| async { ApiError::not_found("no such route") })
        .with_state(state);
    Router::new()
        .route("/", get(console::index))
        .route("/console/{file}", get(console::file))
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
