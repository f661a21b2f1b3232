//! The command line, as clap types. Flags of `dn train ...` follow the reference CLI.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "dn",
    version,
    about = "Self-hosted supervised fine-tuning (LoRA) of open LLMs"
)]
pub struct Cli {
    #[command(flatten)]
    pub connection: ConnectionArgs,
    /// Print indented JSON instead of summaries.
    #[arg(long, global = true)]
    pub json: bool,
    /// Log filter (tracing syntax), e.g. `info` or `dn_worker=debug`.
    #[arg(long, global = true, env = "DN_LOG", default_value = "info")]
    pub log: String,
    /// Log as JSON lines (for `serve` and `worker`).
    #[arg(long, global = true)]
    pub log_json: bool,
    #[command(subcommand)]
    pub command: Command,
}

/// Where the API is and who we are. Each falls back to `DN_*`, then `DREADNODE_*`, then the profile.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Connection")]
pub struct ConnectionArgs {
    /// Server URL (env DN_SERVER or DREADNODE_SERVER; default http://127.0.0.1:8080).
    #[arg(long, global = true)]
    pub server: Option<String>,
    /// API key (env DN_API_KEY or DREADNODE_API_KEY).
    #[arg(long, global = true)]
    pub api_key: Option<String>,
    /// Organization (env DN_ORGANIZATION or DREADNODE_ORGANIZATION; default `default`).
    #[arg(long, global = true)]
    pub organization: Option<String>,
    /// Workspace (env DN_WORKSPACE or DREADNODE_WORKSPACE; default `default`).
    #[arg(long, global = true)]
    pub workspace: Option<String>,
    /// Project, used as the default --project-ref (env DN_PROJECT or DREADNODE_PROJECT).
    #[arg(long, global = true)]
    pub project: Option<String>,
    /// Profile in ~/.config/dn/profiles.toml (env DN_PROFILE; default: the file's `default`).
    #[arg(long, global = true)]
    pub profile: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Fine-tuning jobs.
    #[command(subcommand)]
    Train(TrainCommand),
    /// The dataset registry.
    #[command(subcommand)]
    Dataset(RegistryCommand),
    /// The capability registry.
    #[command(subcommand)]
    Capability(RegistryCommand),
    /// Inspect what training sees.
    #[command(subcommand)]
    Data(DataCommand),
    /// Model files.
    #[command(subcommand)]
    Model(ModelCommand),
    /// Run the control plane (HTTP API), with one supervised worker process by default.
    Serve(ServeArgs),
    /// Run a worker against the store directly (one per GPU node).
    Worker(WorkerArgs),
    /// API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Run by a worker: prepares a job's data under a memory limit (REQUEST, RESULT, LIMIT in bytes).
    #[command(hide = true)]
    PrepareData {
        request: PathBuf,
        result: PathBuf,
        memory_limit: u64,
    },
}

#[derive(Debug, Subcommand)]
pub enum TrainCommand {
    /// Submit a supervised fine-tuning job.
    Sft(Box<SftArgs>),
    /// List jobs.
    List(ListArgs),
    /// Show a job.
    Get { job_id: String },
    /// Wait for a job to finish; exits non-zero unless it completed.
    Wait {
        job_id: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Show a job's log entries and progress events.
    Logs {
        job_id: String,
        /// Keep printing entries as they happen (server-sent events, with a progress bar on a terminal)
        /// until the job ends; exit code 0 only if it completed.
        #[arg(long, short)]
        follow: bool,
    },
    /// Show a job's artifacts; with --download, fetch a checkpoint's files (the PEFT adapter and the
    /// trainer state) through the API, wherever the server stores them.
    Artifacts {
        job_id: String,
        /// Download the checkpoint's files into this directory.
        #[arg(long, value_name = "DIR")]
        download: Option<PathBuf>,
        /// Which checkpoint to download (step-NNNNNN or final; default: the last one listed).
        #[arg(long, requires = "download")]
        checkpoint: Option<String>,
    },
    /// Complete a prompt with a job's adapter (or its base model), rendered with the model's chat template
    /// and the job's capability system prompt as training rendered it; the completion streams to stdout.
    Sample(Box<SampleArgs>),
    /// Cancel a job (asks for confirmation; without a terminal, pass --yes).
    Cancel {
        job_id: String,
        #[arg(long, short)]
        yes: bool,
    },
    /// Send a failed or cancelled job back to the queue.
    Retry { job_id: String },
    /// Models this deployment can train.
    Catalog {
        #[arg(long)]
        query: Option<String>,
        #[arg(long)]
        family: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
}

#[derive(Debug, Args)]
pub struct SftArgs {
    /// Base model: a Hugging Face hub id (org/name[@revision], fetched by the worker), a catalog id, a
    /// local model directory or a .gguf file.
    #[arg(long)]
    pub model: String,
    /// NAME@VERSION of the capability whose system prompt scaffolds the data.
    #[arg(long)]
    pub capability: String,
    /// NAME@VERSION of the training dataset.
    #[arg(long)]
    pub dataset: Option<String>,
    /// NAME@VERSION of a trajectory dataset (repeatable).
    #[arg(long = "trajectory-dataset")]
    pub trajectory_datasets: Vec<String>,
    /// NAME@VERSION of the eval dataset.
    #[arg(long)]
    pub eval_dataset: Option<String>,
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long)]
    pub project_ref: Option<String>,
    #[arg(long)]
    pub run_ref: Option<String>,
    /// Tag (repeatable).
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    #[arg(long)]
    pub max_sequence_length: Option<i64>,
    #[arg(long)]
    pub batch_size: Option<i64>,
    #[arg(long)]
    pub gradient_accumulation_steps: Option<i64>,
    #[arg(long)]
    pub steps: Option<i64>,
    #[arg(long)]
    pub epochs: Option<i64>,
    #[arg(long)]
    pub lora_rank: Option<i64>,
    /// LoRA alpha (scale alpha/rank); default 2 x rank.
    #[arg(long)]
    pub lora_alpha: Option<i64>,
    #[arg(long)]
    pub checkpoint_interval: Option<i64>,
    #[arg(long)]
    pub learning_rate: Option<f64>,
    /// Seed of LoRA init and data order (dn extension; default 0).
    #[arg(long)]
    pub seed: Option<i64>,
    /// constant (default), linear or cosine (dn extension).
    #[arg(long)]
    pub lr_scheduler: Option<String>,
    /// Linear warmup steps (dn extension; default 0).
    #[arg(long)]
    pub warmup_steps: Option<i64>,
    /// Evaluate every N steps (dn extension; default: before and after training only).
    #[arg(long)]
    pub eval_interval: Option<i64>,
    /// Comma-separated PEFT module names, e.g. q_proj,v_proj (qkv_proj,gate_up_proj on Phi-3), or
    /// all-linear (dn extension; the default: every projection of the model's family).
    #[arg(long, value_delimiter = ',')]
    pub lora_target_modules: Option<Vec<String>>,
    /// Global gradient-norm clip, 0 for none (dn extension; default 1.0).
    #[arg(long)]
    pub max_grad_norm: Option<f64>,
    /// AdamW weight decay (dn extension; default 0).
    #[arg(long)]
    pub weight_decay: Option<f64>,
    /// Recompute each layer in the backward instead of keeping its activations: true or false (dn
    /// extension; default: on for CUDA workers, off on the CPU).
    #[arg(long)]
    pub gradient_checkpointing: Option<bool>,
    /// Keep only the newest N step checkpoints in storage; the final adapter is always kept (dn
    /// extension; default: all).
    #[arg(long)]
    pub save_total_limit: Option<i64>,
    /// What the loss covers: assistant (every assistant message), last_assistant (each conversation's
    /// last one) or all (every token) (dn extension; default assistant). With the first two, assistant
    /// messages with `"weight": 0` are left out.
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(dn_types::TRAIN_ON))]
    pub train_on: Option<String>,
    /// Eval conversations the job completes greedily after evaluating, to compare with their reference
    /// answers in its log (dn extension; default 4; 0: none).
    #[arg(long)]
    pub eval_samples: Option<i64>,
    /// Wait for the job to finish; exits non-zero unless it completed.
    #[arg(long)]
    pub wait: bool,
    #[command(flatten)]
    pub wait_args: WaitArgs,
    /// Run the job in this process (embedded store in --data-dir, in-process worker) and wait for it;
    /// --capability/--dataset/... may then also be local directories, pushed first.
    #[arg(long)]
    pub local: bool,
    /// With --local: the embedded store and storage directory (default ~/.local/share/dn).
    #[arg(long, env = "DN_DATA_DIR", requires = "local")]
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Download a Hugging Face hub model (config.json first: an architecture dn cannot train is refused
    /// before any weights; then tokenizer, chat template and safetensors weights) into the hub cache
    /// (HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub), with progress. Resumes an
    /// interrupted download; files already cached are not downloaded again. HF_TOKEN for gated models,
    /// HF_ENDPOINT for a mirror.
    Pull {
        /// org/name (or org/name@revision).
        id: String,
        /// Branch, tag or commit (default main).
        #[arg(long)]
        revision: Option<String>,
    },
    /// The models this node can train: the configured catalog (--config), model directories and .gguf
    /// files under <data-dir>/models, and every model in the hub cache.
    List {
        #[arg(long, env = "DN_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// server.toml / worker.toml whose `models` are listed too.
        #[arg(long, env = "DN_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Write a GGUF model (llama, qwen2, qwen3) as a Hugging Face model directory (dequantized f32
    /// safetensors, config, tokenizer, chat template).
    Import {
        gguf: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Render examples with the model's chat template and show which tokens carry loss.
    Preview(Box<PreviewArgs>),
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["file", "dataset", "trajectory_dataset"])))]
#[command(group(clap::ArgGroup::new("prompt").args(["capability", "system_prompt_file"])))]
pub struct PreviewArgs {
    /// A .gguf file, a model directory (tokenizer.json, tokenizer_config.json) or a hub id (org/name)
    /// in the Hugging Face cache.
    #[arg(long)]
    pub model: String,
    /// A local data file (.jsonl, .json, .csv); needs no server.
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// NAME@VERSION of a pushed dataset.
    #[arg(long)]
    pub dataset: Option<String>,
    /// NAME@VERSION of a pushed trajectory dataset.
    #[arg(long)]
    pub trajectory_dataset: Option<String>,
    /// NAME@VERSION of a pushed capability whose system prompt scaffolds the data.
    #[arg(long)]
    pub capability: Option<String>,
    /// A file holding the system prompt.
    #[arg(long)]
    pub system_prompt_file: Option<PathBuf>,
    #[arg(long, default_value_t = 2048)]
    pub max_sequence_length: usize,
    /// What the loss covers, as `dn train sft --train-on`.
    #[arg(long, default_value = "assistant", value_parser = clap::builder::PossibleValuesParser::new(dn_types::TRAIN_ON))]
    pub train_on: String,
    /// Show at most this many examples.
    #[arg(long, default_value_t = 5)]
    pub limit: usize,
}

/// `dn train sample`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["prompt", "messages"])))]
pub struct SampleArgs {
    pub job_id: String,
    /// Which checkpoint (step-NNNNNN or final; default: final, else the last one saved).
    #[arg(long)]
    pub checkpoint: Option<String>,
    /// One user message.
    #[arg(long)]
    pub prompt: Option<String>,
    /// A JSONL file of conversations (any shape a dataset row may have); one ending with an assistant
    /// turn is cut before it, and that turn is shown as the reference.
    #[arg(long, value_name = "FILE.jsonl")]
    pub messages: Option<PathBuf>,
    #[arg(long, default_value_t = 256)]
    pub max_tokens: usize,
    /// 0: greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f64,
    #[arg(long)]
    pub top_p: Option<f64>,
    #[arg(long)]
    pub top_k: Option<usize>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Sample the base model (no adapter), for comparison.
    #[arg(long)]
    pub base: bool,
    /// Leave the capability's system prompt out.
    #[arg(long)]
    pub no_system_prompt: bool,
    /// The job is in this data dir's embedded store (as `dn train sft --local` left it).
    #[arg(long)]
    pub local: bool,
    #[arg(long, env = "DN_DATA_DIR", requires = "local")]
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct WaitArgs {
    #[arg(long, default_value_t = 5.0)]
    pub poll_interval_sec: f64,
    /// Give up after this many seconds (exit code 2).
    #[arg(long)]
    pub timeout_sec: Option<f64>,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[arg(long, default_value_t = 1)]
    pub page: u32,
    #[arg(long, default_value_t = 20)]
    pub page_size: u32,
    #[arg(long)]
    pub status: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum RegistryCommand {
    /// Push a directory (or, for datasets, a single file with --name and --version).
    Push {
        path: PathBuf,
        /// Dataset name, for a single data file.
        #[arg(long)]
        name: Option<String>,
        /// Dataset version, for a single data file.
        #[arg(long)]
        version: Option<String>,
    },
    /// List pushed versions.
    List,
    /// Show one NAME@VERSION.
    Show { reference: String },
}

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
    /// Where the worker processes train: auto (a GPU if this build has CUDA and one is visible), cpu,
    /// cuda or cuda:N.
    #[arg(long, env = "DN_DEVICE")]
    pub device: Option<String>,
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub storage: StorageArgs,
    #[command(flatten)]
    pub lease: LeaseArgs,
    #[command(flatten)]
    pub prepare: PrepareArgs,
}

#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// Unique worker name (default: hostname-pid).
    #[arg(long, env = "DN_WORKER_ID")]
    pub worker_id: Option<String>,
    /// Where to train: auto (a GPU if this build has CUDA and one is visible), cpu, cuda or cuda:N.
    #[arg(long, env = "DN_DEVICE")]
    pub device: Option<String>,
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub storage: StorageArgs,
    #[command(flatten)]
    pub lease: LeaseArgs,
    #[command(flatten)]
    pub prepare: PrepareArgs,
    /// Run by `dn serve`: wake on a byte from stdin, shut down when stdin closes (the server is gone).
    #[arg(long, hide = true)]
    pub supervised: bool,
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
