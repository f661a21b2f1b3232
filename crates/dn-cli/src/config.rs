//! Settings of `dn serve`, `dn worker` and `dn keys`: a TOML file (configs/server.toml documents every
//! key), overridden by env, overridden by flags.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use dn_registry::{DEFAULT_S3_RETRY_TIMEOUT, Registry, S3Credentials, StorageConfig};
use dn_spec::DeviceSpec;
use dn_store::SqlStore;
use dn_worker::WorkerConfig;
use serde::Deserialize;

use crate::cli::{LeaseArgs, StorageArgs, StoreArgs};

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
const DEFAULT_MAX_UPLOAD: u64 = 1 << 30;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub database_url: Option<String>,
    pub workers: Option<usize>,
    #[serde(default)]
    pub models: Vec<String>,
    /// Jobs may name only catalog models (and local paths), not any hub id.
    pub catalog_only: Option<bool>,
    /// Local model paths of jobs must be under one of these directories (empty: anywhere).
    #[serde(default)]
    pub model_roots: Vec<PathBuf>,
    /// The largest lora_rank, batch_size, max_sequence_length and steps a job may ask for.
    #[serde(default)]
    pub job_limits: dn_types::SftLimits,
    pub max_connections: Option<usize>,
    pub header_timeout_seconds: Option<u64>,
    pub max_requests_per_key: Option<usize>,
    pub max_upload_bytes: Option<u64>,
    /// How long a database call waits for a pooled connection before failing (API: 503); default 5.
    pub db_acquire_timeout_seconds: Option<u64>,
    pub lease_seconds: Option<u64>,
    pub heartbeat_seconds: Option<u64>,
    pub poll_interval_ms: Option<u64>,
    pub shutdown_grace_seconds: Option<u64>,
    pub max_retries: Option<u32>,
    pub retry_backoff_seconds: Option<f64>,
    /// An idle worker whose database stays unreachable this long exits (0: never).
    pub exit_after_outage_seconds: Option<u64>,
    /// MiB of heap a job's data preparation may use (0: in the worker process, no limit).
    pub prepare_memory_mb: Option<u64>,
    pub worker_id: Option<String>,
    /// auto, cpu, cuda or cuda:N.
    pub device: Option<DeviceSpec>,
    /// The device's peak dense bf16 TFLOP/s (MFU).
    pub peak_tflops: Option<f64>,
    /// Where `dn worker` serves its training metrics for Prometheus (`/metrics`).
    pub metrics_listen: Option<std::net::SocketAddr>,
    #[serde(default)]
    pub storage: FileStorage,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileStorage {
    pub dir: Option<PathBuf>,
    pub s3_bucket: Option<String>,
    pub s3_endpoint: Option<String>,
    pub s3_region: Option<String>,
    pub s3_allow_http: Option<bool>,
    /// A static access key (both or neither); otherwise AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY.
    pub s3_access_key_id: Option<String>,
    pub s3_secret_access_key: Option<String>,
    /// How long an S3 request is retried while the bucket is unreachable (default 60).
    pub s3_retry_seconds: Option<u64>,
}

impl FileConfig {
    pub fn load(path: Option<&Path>) -> Result<FileConfig> {
        let Some(path) = path else {
            return Ok(FileConfig::default());
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
    }
}

/// `$XDG_DATA_HOME/dn`, else `~/.local/share/dn`.
pub fn default_data_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("XDG_DATA_HOME") {
        return PathBuf::from(dir).join("dn");
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| ".".into());
    PathBuf::from(home).join(".local/share/dn")
}

pub fn data_dir(args: &StoreArgs, file: &FileConfig) -> PathBuf {
    args.data_dir
        .clone()
        .or_else(|| file.data_dir.clone())
        .unwrap_or_else(default_data_dir)
}

pub async fn open_store(args: &StoreArgs, file: &FileConfig) -> Result<Arc<SqlStore>> {
    let acquire = file
        .db_acquire_timeout_seconds
        .map_or(dn_store::DEFAULT_ACQUIRE_TIMEOUT, |s| {
            Duration::from_secs(s.max(1))
        });
    let store = match args
        .database_url
        .clone()
        .or_else(|| file.database_url.clone())
    {
        Some(url) => SqlStore::connect_with(&url, acquire).await?,
        None => {
            let dir = data_dir(args, file);
            SqlStore::open_data_dir_with(&dir, acquire)
                .await
                .with_context(|| format!("cannot open the job store in {}", dir.display()))?
        }
    };
    Ok(Arc::new(store))
}

pub fn open_registry(args: &StorageArgs, store: &StoreArgs, file: &FileConfig) -> Result<Registry> {
    let bucket = args
        .s3_bucket
        .clone()
        .or_else(|| file.storage.s3_bucket.clone());
    let config = match bucket {
        Some(bucket) => StorageConfig::S3 {
            bucket,
            endpoint: args
                .s3_endpoint
                .clone()
                .or_else(|| file.storage.s3_endpoint.clone()),
            region: args
                .s3_region
                .clone()
                .or_else(|| file.storage.s3_region.clone()),
            allow_http: args
                .s3_allow_http
                .or(file.storage.s3_allow_http)
                .unwrap_or(false),
            credentials: file_credentials(&file.storage)?,
            retry_timeout: file
                .storage
                .s3_retry_seconds
                .map_or(DEFAULT_S3_RETRY_TIMEOUT, Duration::from_secs),
        },
        None => StorageConfig::Local {
            root: args
                .storage_dir
                .clone()
                .or_else(|| file.storage.dir.clone())
                .unwrap_or_else(|| data_dir(store, file).join("storage")),
        },
    };
    let limit = args
        .max_upload_bytes
        .or(file.max_upload_bytes)
        .unwrap_or(DEFAULT_MAX_UPLOAD);
    Ok(Registry::new(&config, limit)?)
}

pub fn worker_config(worker_id: String, args: &LeaseArgs, file: &FileConfig) -> WorkerConfig {
    let mut config = WorkerConfig::new(worker_id);
    if let Some(s) = args.lease_seconds.or(file.lease_seconds) {
        config.lease = Duration::from_secs(s.max(1));
    }
    if let Some(s) = args.heartbeat_seconds.or(file.heartbeat_seconds) {
        config.heartbeat = Duration::from_secs(s.max(1));
    }
    if let Some(ms) = args.poll_interval_ms.or(file.poll_interval_ms) {
        config.poll_interval = Duration::from_millis(ms.max(10));
    }
    if let Some(s) = args.shutdown_grace_seconds.or(file.shutdown_grace_seconds) {
        config.shutdown_grace = Duration::from_secs(s);
    }
    if let Some(n) = args.max_retries.or(file.max_retries) {
        config.max_retries = n;
    }
    if let Some(s) = args.retry_backoff_seconds.or(file.retry_backoff_seconds) {
        config.retry_backoff = Duration::from_secs_f64(s.clamp(0.0, 600.0));
    }
    if let Some(s) = file.exit_after_outage_seconds {
        config.exit_after_outage = (s > 0).then(|| Duration::from_secs(s));
    }
    config
}

/// Where this process's workers train (flag, then file, then `auto`), checked now: a device this build or
/// this machine cannot use is an error at startup, not a failure of every job. Returns the spec and the
/// device it names.
pub fn device(arg: &Option<DeviceSpec>, file: &FileConfig) -> Result<(DeviceSpec, String)> {
    let spec = arg.or(file.device).unwrap_or_default();
    let label =
        dn_worker::check_device(spec).map_err(|e| anyhow::anyhow!("--device {spec}: {e}"))?;
    Ok((spec, label))
}

/// The peak FLOP/s a worker divides by for MFU (flag, then file; `None`: the GPU's known figure).
/// The MLflow tracking server of jobs with `report_to: mlflow`, from the variables MLflow's clients read
/// (`MLFLOW_TRACKING_URI`, ...; see [`dn_worker::MlflowSettings`]); `None` without a tracking URI.
pub fn mlflow() -> Result<Option<dn_worker::MlflowSettings>> {
    dn_worker::MlflowSettings::from_env(|name| std::env::var(name).ok()).map_err(anyhow::Error::msg)
}

pub fn peak_flops(arg: Option<f64>, file: &FileConfig) -> Result<Option<f64>> {
    match arg.or(file.peak_tflops) {
        Some(t) if !(t.is_finite() && t > 0.0) => Err(anyhow::anyhow!(
            "peak_tflops {t}: give the device's dense bf16 TFLOP/s, a positive number"
        )),
        other => Ok(other.map(|t| t * 1e12)),
    }
}

/// Where workers prepare a job's data: a child process of this executable under a memory limit (flag,
/// then file, then half of the node's memory), or this process when the limit is 0.
pub fn sandbox(
    args: &crate::cli::PrepareArgs,
    file: &FileConfig,
) -> Result<Option<dn_worker::Sandbox>> {
    let memory_limit = match args.prepare_memory_mb.or(file.prepare_memory_mb) {
        Some(0) => return Ok(None),
        Some(mb) => mb.saturating_mul(1 << 20),
        None => dn_worker::default_memory_limit(),
    };
    let exe = std::env::current_exe().context("cannot find the dn executable")?;
    Ok(Some(dn_worker::Sandbox { exe, memory_limit }))
}

/// `hostname-pid`: unique per worker process on a node.
pub fn default_worker_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".into());
    format!("{host}-{}", std::process::id())
}

/// The `[storage]` access key of a config file: both keys or neither.
fn file_credentials(storage: &FileStorage) -> Result<Option<S3Credentials>> {
    match (&storage.s3_access_key_id, &storage.s3_secret_access_key) {
        (Some(id), Some(secret)) => Ok(Some(S3Credentials {
            access_key_id: id.clone(),
            secret_access_key: secret.clone(),
        })),
        (None, None) => Ok(None),
        _ => anyhow::bail!(
            "[storage] s3_access_key_id and s3_secret_access_key go together: set both or neither"
        ),
    }
}

/// The HTTP server's limits: flags, then the file, then the defaults; each must be at least 1.
pub fn server_limits(
    args: &crate::cli::ServeArgs,
    file: &FileConfig,
) -> Result<dn_server::ServerLimits> {
    let defaults = dn_server::ServerLimits::default();
    let at_least_one = |name: &str, value: Option<u64>| match value {
        Some(0) => Err(anyhow::anyhow!("{name}: must be at least 1")),
        other => Ok(other),
    };
    let count = |v: Option<usize>| v.map(|v| v as u64);
    let connections = at_least_one(
        "max_connections",
        count(args.max_connections.or(file.max_connections)),
    )?;
    let header_seconds = at_least_one(
        "header_timeout_seconds",
        args.header_timeout_seconds.or(file.header_timeout_seconds),
    )?;
    let per_key = at_least_one(
        "max_requests_per_key",
        count(args.max_requests_per_key.or(file.max_requests_per_key)),
    )?;
    Ok(dn_server::ServerLimits {
        max_connections: connections.map_or(defaults.max_connections, |v| v as usize),
        header_read_timeout: header_seconds
            .map_or(defaults.header_read_timeout, Duration::from_secs),
        max_requests_per_key: per_key.map_or(defaults.max_requests_per_key, |v| v as usize),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The commented example configs stay in step with the code.
    #[test]
    fn example_configs_parse() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
        for name in ["server.toml", "worker.toml"] {
            let config = FileConfig::load(Some(&root.join(name))).unwrap();
            assert_eq!(config.lease_seconds, Some(60), "{name}");
        }
        let server = FileConfig::load(Some(&root.join("server.toml"))).unwrap();
        assert_eq!(server.listen.as_deref(), Some(DEFAULT_LISTEN));
        let worker = FileConfig::load(Some(&root.join("worker.toml"))).unwrap();
        assert_eq!(worker.storage.s3_bucket.as_deref(), Some("dn-artifacts"));
    }

    #[test]
    fn server_limits_come_from_flags_then_the_file_and_refuse_zero() {
        use clap::Parser;
        let serve = |flags: &[&str]| match crate::cli::Cli::parse_from(
            ["dn", "serve"].iter().chain(flags.iter()),
        )
        .command
        {
            crate::cli::Command::Serve(args) => args,
            _ => unreachable!(),
        };
        let file: FileConfig = toml::from_str("max_requests_per_key = 8").unwrap();
        let limits = server_limits(&serve(&["--header-timeout-seconds", "3"]), &file).unwrap();
        assert_eq!(limits.max_requests_per_key, 8);
        assert_eq!(limits.header_read_timeout, Duration::from_secs(3));
        let e = server_limits(&serve(&["--max-connections", "0"]), &file).unwrap_err();
        assert!(e.to_string().starts_with("max_connections:"), "{e}");
    }

    /// `dn serve` hands its settings to its worker processes as variables `dn worker` reads.
    #[test]
    fn worker_processes_read_every_setting_serve_passes_on() {
        use clap::{CommandFactory, Parser};
        let cli = crate::cli::Cli::command();
        let known = env_names(cli.find_subcommand("worker").unwrap());
        let serve = cli.find_subcommand("serve").unwrap();
        let mut args = vec!["dn".to_owned(), "serve".to_owned()];
        for arg in serve.get_arguments().filter(|a| a.get_long().is_some()) {
            let long = arg.get_long().unwrap();
            if ["model", "model-root", "catalog-only"].contains(&long) {
                continue;
            }
            args.push(format!("--{long}"));
            let value = match long {
                "s3-allow-http" => "true",
                "device" => "cpu",
                _ => "1",
            };
            args.push(value.to_owned());
        }
        let parsed = crate::cli::Cli::try_parse_from(&args).unwrap();
        let crate::cli::Command::Serve(serve) = parsed.command else {
            unreachable!()
        };
        let passed = serve.node.env();
        assert!(passed.len() >= 17, "{passed:?}");
        for (name, _) in passed {
            assert!(
                known.iter().any(|k| k == name),
                "dn worker does not read {name}"
            );
        }
    }

    /// The environment variables a subcommand reads (its flags' `env`).
    fn env_names(command: &clap::Command) -> Vec<String> {
        command
            .get_arguments()
            .filter_map(|a| a.get_env())
            .map(|e| e.to_string_lossy().into_owned())
            .collect()
    }

    /// docker-compose.yml is documentation no engine here runs: every `dn` command in it must parse, and
    /// every `DN_*` variable it sets must be one that command reads.
    #[test]
    fn the_compose_example_uses_real_commands_and_variables() {
        use clap::{CommandFactory, Parser};
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/docker-compose.yml");
        let compose: serde_yaml::Value =
            serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let cli = crate::cli::Cli::command();
        let mut checked = 0;
        for (name, service) in compose["services"].as_mapping().unwrap() {
            if service["image"].as_str() != Some("dn:cuda") {
                continue;
            }
            let args: Vec<String> = serde_yaml::from_value(service["command"].clone()).unwrap();
            let parsed = crate::cli::Cli::try_parse_from(
                std::iter::once("dn".to_owned()).chain(args.iter().cloned()),
            );
            assert!(parsed.is_ok(), "{name:?}: {args:?}: {:?}", parsed.err());
            let subcommand = cli.find_subcommand(&args[0]).unwrap();
            let known = env_names(subcommand);
            let environment = service["environment"].as_mapping().unwrap();
            for key in environment.keys().filter_map(|k| k.as_str()) {
                assert!(
                    !key.starts_with("DN_") || known.iter().any(|k| k == key),
                    "{name:?}: `dn {}` does not read {key}",
                    args[0]
                );
            }
            checked += 1;
        }
        assert_eq!(checked, 3, "the server and two workers");
    }
}
