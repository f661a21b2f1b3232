//! The flags of the daemons (`dn serve`, `dn worker`) and of `dn keys`: where the store and storage are,
//! lease timing, data preparation, HTTP limits. Each setting can also come from a `DN_*` variable, and
//! [`StoreArgs::env`] and its siblings turn the given ones back into those variables for child processes.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use dn_spec::DeviceSpec;

/// Where jobs live: `--database-url`, else SQLite in `--data-dir`.
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// Directory of the embedded SQLite database and local storage.
    #[arg(long, env = "DN_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// postgres://... (shared queue) or sqlite://...; overrides --data-dir for the job store.
    #[arg(long, env = "DN_DATABASE_URL")]
    pub database_url: Option<String>,
    /// server.toml / worker.toml with the same settings (flags and env win).
    #[arg(long, env = "DN_CONFIG")]
    pub config: Option<PathBuf>,
}

/// `(NAME, value)` for each setting given: the environment a child process reads the same settings from.
fn env_of<'a>(
    settings: impl IntoIterator<Item = (&'static str, Option<String>)> + 'a,
) -> impl Iterator<Item = (&'static str, String)> + 'a {
    settings
        .into_iter()
        .filter_map(|(name, value)| value.map(|v| (name, v)))
}

fn path_text(path: &Option<PathBuf>) -> Option<String> {
    path.as_ref().map(|p| p.to_string_lossy().into_owned())
}

impl StoreArgs {
    /// These settings as the `DN_*` variables their flags read.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        env_of([
            ("DN_DATA_DIR", path_text(&self.data_dir)),
            ("DN_DATABASE_URL", self.database_url.clone()),
            ("DN_CONFIG", path_text(&self.config)),
        ])
        .collect()
    }
}

/// Where datasets, capabilities and checkpoints live: a directory (default `<data-dir>/storage`) or S3.
#[derive(Debug, Clone, Args)]
pub struct StorageArgs {
    #[arg(long, env = "DN_STORAGE_DIR")]
    pub storage_dir: Option<PathBuf>,
    /// S3-compatible bucket (credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY).
    #[arg(long, env = "DN_S3_BUCKET")]
    pub s3_bucket: Option<String>,
    #[arg(long, env = "DN_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    #[arg(long, env = "DN_S3_REGION")]
    pub s3_region: Option<String>,
    /// Allow plain-HTTP S3 endpoints (e.g. a server on loopback).
    #[arg(long, env = "DN_S3_ALLOW_HTTP")]
    pub s3_allow_http: Option<bool>,
    /// Largest accepted upload in bytes (default 1 GiB).
    #[arg(long, env = "DN_MAX_UPLOAD_BYTES")]
    pub max_upload_bytes: Option<u64>,
}

impl StorageArgs {
    /// These settings as the `DN_*` variables their flags read.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        env_of([
            ("DN_STORAGE_DIR", path_text(&self.storage_dir)),
            ("DN_S3_BUCKET", self.s3_bucket.clone()),
            ("DN_S3_ENDPOINT", self.s3_endpoint.clone()),
            ("DN_S3_REGION", self.s3_region.clone()),
            (
                "DN_S3_ALLOW_HTTP",
                self.s3_allow_http.map(|b| b.to_string()),
            ),
            (
                "DN_MAX_UPLOAD_BYTES",
                self.max_upload_bytes.map(|n| n.to_string()),
            ),
        ])
        .collect()
    }
}

/// Lease timing shared by `serve` (its worker processes) and `worker`.
#[derive(Debug, Clone, Args)]
pub struct LeaseArgs {
    /// A claimed job is requeued if its worker is silent this long.
    #[arg(long, env = "DN_LEASE_SECONDS")]
    pub lease_seconds: Option<u64>,
    #[arg(long, env = "DN_HEARTBEAT_SECONDS")]
    pub heartbeat_seconds: Option<u64>,
    /// How often an idle worker looks for work, in milliseconds (a newly queued job wakes it at once:
    /// LISTEN/NOTIFY on PostgreSQL; polling catches what a notification misses).
    #[arg(long, env = "DN_POLL_INTERVAL_MS")]
    pub poll_interval_ms: Option<u64>,
    /// On SIGTERM/SIGINT, how long the job in progress gets to checkpoint and go back to the queue
    /// before the worker exits anyway (default 30).
    #[arg(long, env = "DN_SHUTDOWN_GRACE_SECONDS")]
    pub shutdown_grace_seconds: Option<u64>,
    /// Automatic retries of an attempt that failed for a reason that may pass (storage or database
    /// trouble, a crash, a device error, a lost worker); bad input fails at once (default 3).
    #[arg(long, env = "DN_MAX_RETRIES")]
    pub max_retries: Option<u32>,
    /// The first automatic retry waits about this long, each next one twice as long, at most 10 minutes,
    /// with jitter (default 10).
    #[arg(long, env = "DN_RETRY_BACKOFF_SECONDS")]
    pub retry_backoff_seconds: Option<f64>,
}

impl LeaseArgs {
    /// These settings as the `DN_*` variables their flags read.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let text = |n: Option<u64>| n.map(|n| n.to_string());
        env_of([
            ("DN_LEASE_SECONDS", text(self.lease_seconds)),
            ("DN_HEARTBEAT_SECONDS", text(self.heartbeat_seconds)),
            ("DN_POLL_INTERVAL_MS", text(self.poll_interval_ms)),
            (
                "DN_SHUTDOWN_GRACE_SECONDS",
                text(self.shutdown_grace_seconds),
            ),
            ("DN_MAX_RETRIES", self.max_retries.map(|n| n.to_string())),
            (
                "DN_RETRY_BACKOFF_SECONDS",
                self.retry_backoff_seconds.map(|n| n.to_string()),
            ),
        ])
        .collect()
    }
}

/// Data preparation of the workers (`serve`'s and `worker`).
#[derive(Debug, Clone, Args)]
pub struct PrepareArgs {
    /// A job's data (decoding its files, rendering them with the chat template) is prepared in a child
    /// process limited to this many MiB of heap (default: half of this node's memory; 0: no child
    /// process, no limit). A job that needs more fails naming the file or rows.
    #[arg(long, env = "DN_PREPARE_MEMORY_MB")]
    pub prepare_memory_mb: Option<u64>,
}

impl PrepareArgs {
    /// These settings as the `DN_*` variables their flags read.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        env_of([(
            "DN_PREPARE_MEMORY_MB",
            self.prepare_memory_mb.map(|n| n.to_string()),
        )])
        .collect()
    }
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[arg(long, env = "DN_LISTEN")]
    pub listen: Option<String>,
    /// Worker processes this server starts and supervises (default 1; 0 = API only). Each is `dn
    /// worker` run as a child process: one that dies (out of memory, a crash) leaves the API answering,
    /// its job goes back to the queue, and it is started again after a backoff.
    #[arg(long, env = "DN_WORKERS")]
    pub workers: Option<usize>,
    /// A catalog model (repeatable): a local model directory, a .gguf file or a hub id. The catalog also
    /// lists every model in this node's hub cache.
    #[arg(long = "model")]
    pub models: Vec<String>,
    /// Jobs may name only catalog models (and local paths), not any hub id.
    #[arg(long, env = "DN_CATALOG_ONLY")]
    pub catalog_only: Option<bool>,
    /// A directory local model paths of jobs must be under (repeatable; default: anywhere). Any other
    /// path is refused with one message, whether it exists or not.
    #[arg(long = "model-root", value_name = "DIR")]
    pub model_roots: Vec<PathBuf>,
    /// Open HTTP connections at most (default 4096, and at most half the file-descriptor limit); past
    /// it a new connection is closed at once.
    #[arg(long, env = "DN_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// A request's headers must arrive within this many seconds; idle keep-alive connections are closed
    /// after it too (default 10).
    #[arg(long, env = "DN_HEADER_TIMEOUT_SECONDS")]
    pub header_timeout_seconds: Option<u64>,
    /// Requests of one API key handled at once at most; more get 429 (default 64).
    #[arg(long, env = "DN_MAX_REQUESTS_PER_KEY")]
    pub max_requests_per_key: Option<usize>,
    #[command(flatten)]
    pub node: NodeArgs,
}

/// What a worker needs, given to `dn worker` and to `dn serve` (which hands it on to its worker
/// processes): device, store, storage, lease timing, data preparation.
#[derive(Debug, Clone, Args)]
pub struct NodeArgs {
    /// Where to train: auto (a GPU if this build has CUDA and one is visible), cpu, cuda or cuda:N.
    #[arg(long, env = "DN_DEVICE", value_parser = DeviceSpec::parse)]
    pub device: Option<DeviceSpec>,
    /// The device's peak dense bf16 TFLOP/s, for the MFU in step logs (default: the GPU's from dn's
    /// table of known GPUs; none on a CPU).
    #[arg(long, env = "DN_PEAK_TFLOPS", value_parser = parse_peak_tflops)]
    pub peak_tflops: Option<f64>,
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub storage: StorageArgs,
    #[command(flatten)]
    pub lease: LeaseArgs,
    #[command(flatten)]
    pub prepare: PrepareArgs,
}

/// A peak throughput in TFLOP/s: a positive finite number.
pub fn parse_peak_tflops(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!(
            "{text:?} is not a peak throughput: give the device's dense bf16 TFLOP/s, e.g. 989 for an H100"
        )),
    }
}

impl NodeArgs {
    /// These settings as the `DN_*` variables `dn worker` reads them from.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let device = self.device.map(|d| d.to_string());
        let peak = self.peak_tflops.map(|p| p.to_string());
        let mut env = env_of([("DN_DEVICE", device), ("DN_PEAK_TFLOPS", peak)]).collect::<Vec<_>>();
        env.extend(self.store.env());
        env.extend(self.storage.env());
        env.extend(self.lease.env());
        env.extend(self.prepare.env());
        env
    }
}

#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// Unique worker name (default: hostname-pid).
    #[arg(long, env = "DN_WORKER_ID")]
    pub worker_id: Option<String>,
    #[command(flatten)]
    pub node: NodeArgs,
    /// Serve the training job's metrics (step, loss, tokens/s, MFU, memory) for Prometheus on
    /// http://ADDR/metrics, e.g. 127.0.0.1:9464 (default: off).
    #[arg(long, env = "DN_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Run by `dn serve`: wake on a byte from stdin, shut down when stdin closes (the server is gone).
    #[arg(long, hide = true)]
    pub supervised: bool,
}

/// `dn doctor`: the node's device as a worker would pick it, and where its data and models live.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// The device to check, as `dn worker --device` takes it: auto, cpu, cuda or cuda:N (default: the
    /// config file's, else auto).
    #[arg(long, env = "DN_DEVICE", value_parser = DeviceSpec::parse)]
    pub device: Option<DeviceSpec>,
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create an API key for an organization and print it (alone, on stdout).
    Create {
        #[arg(long)]
        org: String,
        /// The key stops working after this long: e.g. 90d, 12h, 30m, 3600s (default: never).
        #[arg(long, value_name = "DURATION")]
        expires_in: Option<String>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// An organization's keys: id, prefix, created, last used, expiry, revocation (never the secret).
    List {
        #[arg(long)]
        org: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Revoke a key by its id (from `dn keys list`): requests with it get 401 at once.
    Revoke {
        id: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}
