//! The command line, as clap types. Flags of `dn train ...` follow the reference CLI.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use dn_spec::{LrSchedule, TrainOn, defaults};

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
    /// What this node can do: the device it would train on and why, each CUDA library and the file it
    /// resolved to, the driver and its GPUs, host memory and cores, the data dir and the hub cache.
    Doctor(DoctorArgs),
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
    /// A job's metrics, one row per step (its training scalars and eval loss), as CSV (the default) or
    /// JSON, for a spreadsheet, pandas or another tracker.
    Metrics {
        job_id: String,
        /// csv or json.
        #[arg(long, default_value = "csv", value_parser = ["csv", "json"])]
        format: String,
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
    /// Merge a job's adapter into its base model and write the result (see `dn model merge`).
    Export(Box<ExportArgs>),
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
    #[arg(long, value_parser = LrSchedule::parse)]
    pub lr_scheduler: Option<LrSchedule>,
    /// Linear warmup steps (dn extension; default 0).
    #[arg(long)]
    pub warmup_steps: Option<i64>,
    /// Evaluate every N steps (dn extension; default: before and after training only).
    #[arg(long)]
    pub eval_interval: Option<i64>,
    /// Comma-separated PEFT module names, e.g. q_proj,v_proj (qkv_proj,gate_up_proj on Phi-3; on a
    /// mixture of experts the experts' gate_up_proj,down_proj and the router, gate or gpt-oss's router,
    /// which all-linear leaves out), or all-linear (dn extension; the default: every projection of the
    /// model's family).
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
    /// How the frozen base is held (dn extension): as_stored (the default: a GGUF's or bitsandbytes'
    /// quantization kept), none (decoded at load), nf4 or q8_0 (projections quantized at load: QLoRA).
    #[arg(long, value_parser = dn_spec::BaseQuantization::parse)]
    pub base_quantization: Option<dn_spec::BaseQuantization>,
    /// Experiment trackers to report to, comma-separated (dn extension): tensorboard (event files in
    /// every checkpoint, for `tensorboard --logdir`), mlflow (a run on the worker's MLFLOW_TRACKING_URI), or
    /// none (the default).
    #[arg(long, value_delimiter = ',')]
    pub report_to: Option<Vec<String>>,
    /// Keep only the newest N step checkpoints in storage; the final adapter is always kept (dn
    /// extension; default: all).
    #[arg(long)]
    pub save_total_limit: Option<i64>,
    /// What the loss covers: assistant (every assistant message), last_assistant (each conversation's
    /// last one) or all (every token) (dn extension; default assistant). With the first two, assistant
    /// messages with `"weight": 0` are left out.
    #[arg(long, value_parser = TrainOn::parse)]
    pub train_on: Option<TrainOn>,
    /// Eval conversations the job completes greedily after evaluating, to compare with their reference
    /// answers in its log (dn extension; default 4; 0: none).
    #[arg(long)]
    pub eval_samples: Option<i64>,
    /// Most tokens in one forward/backward pass (dn extension; default: from the GPU's free memory on
    /// CUDA, 4096 on the CPU). Lower it if a job runs out of GPU memory.
    #[arg(long)]
    pub tokens_per_pass: Option<i64>,
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
    /// Merge a PEFT LoRA adapter into its base model (a model directory, a .gguf file or a hub id) and
    /// write a Hugging Face model directory: W + (alpha / r) B A in safetensors shards of at most 5 GB,
    /// the base's config, tokenizer, chat template and generation config.
    Merge {
        #[arg(long)]
        base: String,
        #[arg(long)]
        adapter: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        target: ExportTarget,
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
    #[arg(long, default_value_t = defaults::MAX_SEQUENCE_LENGTH as usize)]
    pub max_sequence_length: usize,
    /// What the loss covers, as `dn train sft --train-on`: assistant, last_assistant or all.
    #[arg(long, default_value_t, value_parser = TrainOn::parse)]
    pub train_on: TrainOn,
    /// Show at most this many examples (only as many rows are decoded).
    #[arg(long, default_value_t = defaults::PREVIEW_ROWS as usize)]
    pub limit: usize,
    /// The rows are rendered in a memory-limited child process, as a job's are.
    #[command(flatten)]
    pub prepare: PrepareArgs,
}

/// `dn train export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    pub job_id: String,
    /// Which checkpoint (default: final, else the last one saved).
    #[arg(long)]
    pub checkpoint: Option<String>,
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub target: ExportTarget,
}

/// What a merged model is written as.
#[derive(Debug, Clone, Args)]
pub struct ExportTarget {
    /// merged: a Hugging Face model directory; gguf: one llama.cpp file (llama, qwen2, qwen3).
    #[arg(long, default_value = "merged", value_parser = clap::builder::PossibleValuesParser::new(["merged", "gguf"]))]
    pub format: String,
    /// bf16, f16 or f32 (default: the base's dtype).
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(["bf16", "f16", "f32"]))]
    pub dtype: Option<String>,
    /// GGUF only: q8_0 matrices (norms stay f32).
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(["q8_0"]))]
    pub quant: Option<String>,
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
    /// Give up after this many seconds (exit code 2; 3 when the server was unreachable then). A server
    /// that does not answer (restarting, a network blip) is tried again until then, or without this
    /// for 10 minutes.
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

pub use crate::daemon_args::{
    DoctorArgs, KeysCommand, LeaseArgs, PrepareArgs, ServeArgs, StorageArgs, StoreArgs, WorkerArgs,
};
