//! `dn train sft --local`: the same job, run in one process against the embedded default (SQLite and
//! local storage in --data-dir, an in-process worker). It goes through the real API on a loopback port,
//! so validation, logs and artifacts are exactly those of `dn serve` + `dn train sft --wait`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use dn_registry::{Registry, StorageConfig};
use dn_server::{AppState, Catalog};
use dn_spec::DeviceSpec;
use dn_store::SqlStore;
use dn_store::prelude::*;
use dn_types::{ArtifactKind, SftDefaults};
use dn_worker::{SftRunner, Worker, WorkerConfig};
use tokio::sync::watch;

use crate::cli::SftArgs;
use crate::commands::registry::push_path;
use crate::commands::train::{sft_request, wait};
use crate::config;
use crate::connection::{Connection, DEFAULT_ORGANIZATION, DEFAULT_WORKSPACE};
use crate::output::summary;

const KEY_FILE: &str = "local-api-key";

/// The data dir's own API key (organization `default`), created once and kept in `<data-dir>/local-api-key`
/// (mode 0600), so `dn serve --data-dir` on the same directory can be queried with it later.
async fn local_key(store: &SqlStore, data_dir: &Path) -> Result<String> {
    let path = data_dir.join(KEY_FILE);
    if let Ok(key) = std::fs::read_to_string(&path) {
        let key = key.trim().to_owned();
        if store.organization_for_key(&key).await?.is_some() {
            return Ok(key);
        }
    }
    let key = store.create_api_key(DEFAULT_ORGANIZATION).await?;
    std::fs::write(&path, format!("{key}\n"))
        .with_context(|| format!("cannot write {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(key)
}

/// A ref that names an existing directory is pushed, and replaced by its NAME@VERSION.
async fn push_if_dir(
    client: &dn_client::Client,
    kind: ArtifactKind,
    reference: &str,
    json: bool,
) -> Result<String> {
    let path = Path::new(reference);
    if !path.is_dir() {
        return Ok(reference.to_owned());
    }
    let pushed = push_path(client, DEFAULT_ORGANIZATION, kind, path, None, None).await?;
    if !json {
        eprintln!("{kind} {} from {}", pushed.reference, path.display());
    }
    Ok(pushed.version_ref)
}

/// The API of a data dir's embedded store and storage on a loopback port, with the data dir's own key.
pub struct LocalServer {
    pub conn: Connection,
    pub store: Arc<SqlStore>,
    pub registry: Registry,
    stop: watch::Sender<bool>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl LocalServer {
    pub async fn start(data_dir: PathBuf) -> Result<LocalServer> {
        let store = Arc::new(
            SqlStore::open_data_dir(&data_dir)
                .await
                .with_context(|| format!("cannot open the job store in {}", data_dir.display()))?,
        );
        let registry = Registry::new(
            &StorageConfig::Local {
                root: data_dir.join("storage"),
            },
            1 << 30,
        )?;
        let key = local_key(&store, &data_dir).await?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = watch::channel(false);
        let state = AppState {
            store: store.clone(),
            registry: registry.clone(),
            catalog: Arc::new(
                Catalog::load(&[])
                    .map_err(anyhow::Error::msg)?
                    .with_hub_cache(Some(dn_model::hub::hub_cache_dir())),
            ),
            defaults: SftDefaults::default(),
            // Local jobs name their model by path, which no catalog holds: no dataset viewer here.
            previewer: None,
        };
        let mut server_stop = stopped;
        let server = tokio::spawn(dn_server::serve(listener, state, async move {
            let _ = server_stop.changed().await;
        }));
        let conn = Connection {
            server: format!("http://{addr}"),
            api_key: Some(key),
            organization: DEFAULT_ORGANIZATION.into(),
            workspace: DEFAULT_WORKSPACE.into(),
            project: None,
        };
        Ok(LocalServer {
            conn,
            store,
            registry,
            stop,
            server,
        })
    }

    /// Turns true when [`close`](Self::close) begins: what a worker of this server stops on.
    pub fn stopping(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }

    /// Stops `worker` (started on [`stopping`](Self::stopping)), then the server, then closes the store.
    pub async fn close(self, worker: Option<tokio::task::JoinHandle<()>>) {
        let _ = self.stop.send(true);
        if let Some(worker) = worker {
            let _ = worker.await;
        }
        let _ = self.server.await;
        self.store.close().await;
    }
}

pub async fn sft_local(mut args: SftArgs, json: bool) -> Result<i32> {
    let data_dir: PathBuf = args
        .data_dir
        .clone()
        .unwrap_or_else(config::default_data_dir);
    // `DN_PREPARE_MEMORY_MB` as for `dn worker`.
    let prepare = crate::cli::PrepareArgs {
        prepare_memory_mb: std::env::var("DN_PREPARE_MEMORY_MB")
            .ok()
            .map(|mb| {
                mb.trim().parse().with_context(|| {
                    format!("DN_PREPARE_MEMORY_MB {mb:?}: expected a whole number of MiB")
                })
            })
            .transpose()?,
    };
    let local = LocalServer::start(data_dir.clone()).await?;
    let mut runner = SftRunner::new(local.registry.clone(), data_dir.join("work"));
    // `DN_DEVICE` as for `dn worker` (default auto).
    if let Ok(text) = std::env::var("DN_DEVICE") {
        let device = DeviceSpec::parse(&text).map_err(|e| anyhow::anyhow!("DN_DEVICE: {e}"))?;
        dn_worker::check_device(device).map_err(|e| anyhow::anyhow!("DN_DEVICE={device}: {e}"))?;
        runner = runner.with_device(device);
    }
    // `DN_PEAK_TFLOPS` as for `dn worker` (default: the GPU's known figure).
    if let Ok(text) = std::env::var("DN_PEAK_TFLOPS") {
        let tflops = crate::daemon_args::parse_peak_tflops(&text)
            .map_err(|e| anyhow::anyhow!("DN_PEAK_TFLOPS: {e}"))?;
        runner = runner.with_peak_flops(tflops * 1e12);
    }
    if let Some(mlflow) = config::mlflow()? {
        runner = runner.with_mlflow(mlflow);
    }
    if let Some(sandbox) = config::sandbox(&prepare, &config::FileConfig::default())? {
        runner = runner.with_sandbox(sandbox);
    }
    let runner = Arc::new(runner);
    // No supervisor to start a fresh one: the in-process worker waits out any outage.
    let mut worker_config = WorkerConfig::new("local");
    worker_config.exit_after_outage = None;
    let worker = Worker::new(local.store.clone(), runner, worker_config);
    let stopping = local.stopping();
    let worker = tokio::spawn(async move {
        // Without `exit_after_outage` the worker only ends when asked to.
        let _ = worker.run(stopping).await;
    });
    let conn = local.conn.clone();
    let result = async {
        let client = conn.client()?;
        args.capability =
            push_if_dir(&client, ArtifactKind::Capability, &args.capability, json).await?;
        if let Some(d) = &args.dataset {
            args.dataset = Some(push_if_dir(&client, ArtifactKind::Dataset, d, json).await?);
        }
        if let Some(d) = &args.eval_dataset {
            args.eval_dataset = Some(push_if_dir(&client, ArtifactKind::Dataset, d, json).await?);
        }
        let mut trajectories = Vec::new();
        for d in &args.trajectory_datasets {
            trajectories.push(push_if_dir(&client, ArtifactKind::Dataset, d, json).await?);
        }
        args.trajectory_datasets = trajectories;
        args.model = absolute_if_local(&args.model);
        let request = sft_request(&args, None)?;
        let job = client
            .create_job(&conn.organization, &conn.workspace, &request)
            .await?;
        if !json {
            eprintln!(
                "submitted {} (data in {})",
                summary(&job),
                data_dir.display()
            );
        }
        wait(&client, &conn, &job.id, &args.wait_args, json, true).await
    }
    .await;
    local.close(Some(worker)).await;
    result
}

/// A model path that exists here, made absolute: a relative `org/name` is otherwise a hub id.
pub fn absolute_if_local(model: &str) -> String {
    match std::fs::canonicalize(model) {
        Ok(path) if !Path::new(model).is_absolute() => path.display().to_string(),
        _ => model.to_owned(),
    }
}
