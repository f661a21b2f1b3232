//! `dn serve`, `dn worker`, `dn keys create`.

use std::sync::Arc;

use anyhow::{Context, Result};
use dn_server::{AppState, Catalog};
use dn_store::prelude::*;
use dn_types::SftDefaults;
use dn_worker::{SftRunner, Worker};
use tokio::sync::watch;
use tracing::info;

use crate::cli::{KeysCommand, ServeArgs, WorkerArgs};
use crate::commands::supervise::{WorkerProcesses, supervise};
use crate::config::{self, FileConfig};

/// Resolves when SIGINT or SIGTERM arrives.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

/// The logging flags a child process is given (they have no environment variable to inherit).
#[derive(Debug, Clone)]
pub struct Logging {
    pub filter: String,
    pub json: bool,
}

impl Logging {
    fn child_args(&self) -> Vec<String> {
        let mut args = vec!["--log".to_owned(), self.filter.clone()];
        if self.json {
            args.push("--log-json".into());
        }
        args
    }
}

pub async fn serve(args: ServeArgs, logging: Logging) -> Result<()> {
    let file = FileConfig::load(args.node.store.config.as_deref())?;
    let limits = config::server_limits(&args, &file)?;
    let store = config::open_store(&args.node.store, &file).await?;
    let registry = config::open_registry(&args.node.storage, &args.node.store, &file)?;
    let models = if args.models.is_empty() {
        file.models.clone()
    } else {
        args.models.clone()
    };
    let catalog = Catalog::load(&models)
        .map_err(anyhow::Error::msg)?
        .with_hub_cache(Some(dn_model::hub::hub_cache_dir()))
        .catalog_only(args.catalog_only.or(file.catalog_only).unwrap_or(false))
        .model_roots(if args.model_roots.is_empty() {
            &file.model_roots
        } else {
            &args.model_roots
        })
        .map_err(anyhow::Error::msg)?;
    if store.count_api_keys().await? == 0 {
        let key = store.create_api_key("default").await?;
        println!(
            "created an API key for organization 'default' (shown once, store it now):\n{key}"
        );
    }
    let listen = args
        .listen
        .clone()
        .or(file.listen.clone())
        .unwrap_or_else(|| config::DEFAULT_LISTEN.into());
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let (stop, stopped) = watch::channel(false);
    let workers = args.workers.or(file.workers).unwrap_or(1);
    let worker_config = config::worker_config(config::default_worker_id(), &args.node.lease, &file);
    let handles = if workers == 0 {
        Vec::new()
    } else {
        // Checked here too, so that a device this node cannot use stops the server at startup.
        let (_, label) = config::device(&args.node.device, &file)?;
        info!(device = %label, "{workers} worker process(es) train on {label}");
        let plan = WorkerProcesses {
            exe: std::env::current_exe().context("cannot find the dn executable")?,
            args: logging.child_args(),
            env: args.node.env(),
            base_id: worker_config.worker_id.clone(),
            max_retries: worker_config.max_retries,
            shutdown_grace: worker_config.shutdown_grace,
        };
        supervise(store.clone(), plan, workers, stopped)
    };
    let previewer = crate::previewer::SandboxPreviewer {
        registry: registry.clone(),
        sandbox: config::sandbox(&args.node.prepare, &file)?,
        scratch: config::data_dir(&args.node.store, &file)
            .join("work")
            .join("preview"),
    };
    let state = AppState {
        store: store.clone(),
        registry,
        catalog: Arc::new(catalog),
        defaults: SftDefaults {
            limits: file.job_limits,
        },
        previewer: Some(Arc::new(previewer)),
    };
    info!(%listen, workers, "dn serve: listening on http://{}", listener.local_addr()?);
    dn_server::serve_with_limits(listener, state, limits, async move {
        shutdown_signal().await;
        let _ = stop.send(true);
    })
    .await?;
    for handle in handles {
        let _ = handle.await;
    }
    store.close().await;
    Ok(())
}

pub async fn worker(args: WorkerArgs) -> Result<()> {
    let file = FileConfig::load(args.node.store.config.as_deref())?;
    let store = config::open_store(&args.node.store, &file).await?;
    let registry = config::open_registry(&args.node.storage, &args.node.store, &file)?;
    let worker_id = args
        .worker_id
        .clone()
        .or(file.worker_id.clone())
        .unwrap_or_else(config::default_worker_id);
    let worker_config = config::worker_config(worker_id.clone(), &args.node.lease, &file);
    let (stop, stopped) = watch::channel(false);
    let work_dir = config::data_dir(&args.node.store, &file).join("work");
    let (device, label) = config::device(&args.node.device, &file)?;
    info!(
        worker = %worker_id,
        device = %label,
        storage = %registry.location(),
        work_dir = %work_dir.display(),
        "dn worker ready: training on {label}"
    );
    let mut runner = SftRunner::new(registry, work_dir).with_device(device);
    if let Some(peak) = config::peak_flops(args.node.peak_tflops, &file)? {
        runner = runner.with_peak_flops(peak);
    }
    if let Some(mlflow) = config::mlflow()? {
        let uri = mlflow.display_uri();
        info!(%uri, "dn worker: jobs with report_to mlflow report to {uri}");
        runner = runner.with_mlflow(mlflow);
    }
    let metrics = match args.metrics_listen.or(file.metrics_listen) {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("--metrics-listen {addr}: cannot listen"))?;
            let gauges = dn_worker::TrainingGauges::new(worker_id.clone());
            runner = runner.with_gauges(gauges.clone());
            info!(%addr, "dn worker: training metrics on http://{addr}/metrics");
            Some(tokio::spawn(super::metrics_server::serve_metrics(
                listener,
                gauges,
                stop.subscribe(),
            )))
        }
        None => None,
    };
    if let Some(sandbox) = config::sandbox(&args.node.prepare, &file)? {
        runner = runner.with_sandbox(sandbox);
    }
    let mut worker = Worker::new(store.clone(), Arc::new(runner), worker_config);
    let (wake, woken) = watch::channel(0u64);
    if args.supervised {
        worker = worker.with_wake(woken);
    }
    let supervisor = args
        .supervised
        .then(move || tokio::spawn(read_supervisor(wake)));
    let mut handle = tokio::spawn(worker.run(stopped));
    let supervisor_gone = async move {
        match supervisor {
            Some(reader) => {
                let _ = reader.await;
            }
            None => std::future::pending().await,
        }
    };
    let ended = tokio::select! {
        () = shutdown_signal() => None,
        () = supervisor_gone => None,
        ended = &mut handle => Some(ended),
    };
    let ended = match ended {
        Some(ended) => ended,
        None => {
            info!("shutting down: the job in progress checkpoints and goes back to the queue");
            let _ = stop.send(true);
            handle.await
        }
    };
    // The metrics endpoint ends with the worker.
    let _ = stop.send(true);
    if let Some(server) = metrics {
        let _ = server.await;
    }
    store.close().await;
    match ended {
        Ok(result) => Ok(result?),
        Err(e) => Err(anyhow::anyhow!("the worker task ended abnormally: {e}")),
    }
}

/// A supervised worker's stdin: each byte read is a queued job; the end of it is the supervisor gone.
async fn read_supervisor(wake: watch::Sender<u64>) {
    use tokio::io::AsyncReadExt;
    let mut stdin = tokio::io::stdin();
    let mut buffer = [0u8; 64];
    while let Ok(1..) = stdin.read(&mut buffer).await {
        wake.send_modify(|count| *count = count.wrapping_add(1));
    }
}

pub async fn keys(command: KeysCommand, json: bool) -> Result<()> {
    let (store_args, org) = match &command {
        KeysCommand::Create { store, org, .. } | KeysCommand::List { store, org } => {
            (store, Some(org))
        }
        KeysCommand::Revoke { store, .. } => (store, None),
    };
    if let Some(org) = org {
        dn_types::validate_name(org).map_err(|m| anyhow::anyhow!("--org '{org}': {m}"))?;
    }
    let file = FileConfig::load(store_args.config.as_deref())?;
    let store = config::open_store(store_args, &file).await?;
    let result = key_command(&*store, command, json).await;
    store.close().await;
    result
}

async fn key_command(store: &dyn JobStore, command: KeysCommand, json: bool) -> Result<()> {
    match command {
        KeysCommand::Create {
            org, expires_in, ..
        } => {
            let expires_at = expires_in
                .as_deref()
                .map(|d| {
                    parse_duration(d)
                        .map(|d| chrono::Utc::now() + d)
                        .map_err(|m| anyhow::anyhow!("--expires-in '{d}': {m}"))
                })
                .transpose()?;
            println!("{}", store.create_expiring_api_key(&org, expires_at).await?);
        }
        KeysCommand::List { org, .. } => {
            let keys = store.list_api_keys(&org).await?;
            if json {
                return crate::output::print_json(&keys);
            }
            let time = |t: Option<chrono::DateTime<chrono::Utc>>| {
                t.map_or("-".to_owned(), |t| t.format("%Y-%m-%d %H:%M").to_string())
            };
            println!(
                "ID                PREFIX   CREATED           LAST USED         EXPIRES           REVOKED"
            );
            for k in keys {
                println!(
                    "{}  {}  {:16}  {:16}  {:16}  {}",
                    k.id,
                    k.prefix,
                    time(Some(k.created_at)),
                    time(k.last_used_at),
                    time(k.expires_at),
                    time(k.revoked_at)
                );
            }
        }
        KeysCommand::Revoke { id, .. } => match store.revoke_api_key(&id).await? {
            Some(key) => println!(
                "revoked {} ({}..., organization {})",
                key.id, key.prefix, key.organization_id
            ),
            None => anyhow::bail!("no API key has the id {id:?} (see `dn keys list --org ORG`)"),
        },
    }
    Ok(())
}

/// `90d`, `12h`, `30m`, `3600s`: a positive whole number and a unit, at most ten years.
fn parse_duration(text: &str) -> std::result::Result<chrono::Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or("needs a unit: d, h, m or s (e.g. 90d)")?;
    let (number, unit) = text.split_at(split);
    let n: i64 = number
        .parse()
        .map_err(|_| "must start with a whole number (e.g. 90d)".to_owned())?;
    let seconds = match unit {
        "d" => n.checked_mul(86_400),
        "h" => n.checked_mul(3_600),
        "m" => n.checked_mul(60),
        "s" => Some(n),
        other => return Err(format!("unknown unit {other:?}: use d, h, m or s")),
    }
    .filter(|s| (1..=10 * 366 * 86_400).contains(s))
    .ok_or("must be between 1 second and 10 years")?;
    Ok(chrono::Duration::seconds(seconds))
}

#[cfg(test)]
mod tests {
    use super::parse_duration;

    #[test]
    fn durations_have_units_and_bounds() {
        assert_eq!(parse_duration("90d").unwrap().num_seconds(), 90 * 86_400);
        assert_eq!(parse_duration("12h").unwrap().num_seconds(), 43_200);
        assert_eq!(parse_duration("1s").unwrap().num_seconds(), 1);
        for bad in [
            "",
            "d",
            "90",
            "0s",
            "-5m",
            "5y",
            "99999999999999999999d",
            "4000d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
