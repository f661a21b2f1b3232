//! Training-job wire types, field for field as the reference SDK (`dreadnode.app.api.models`) defines them.
//! Request types reject unknown fields; response types omit null fields.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

/// `{name, version}`; `name` may carry an `org/` prefix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DatasetRef {
    pub name: String,
    pub version: String,
}

/// Same shape as [`DatasetRef`], for capabilities.
pub type CapabilityRef = DatasetRef;

/// The only backend of SFT jobs on the wire (constant `"tinker"`, as in the reference).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    #[default]
    Tinker,
}

/// The only trainer type `dn` runs (constant `"sft"`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TrainerType {
    #[default]
    Sft,
}

/// `TinkerSFTJobConfig`: every field optional; defaults are applied by validation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TinkerSftJobConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset_ref: Option<DatasetRef>,
    #[serde(default)]
    pub trajectory_dataset_refs: Vec<DatasetRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_dataset_ref: Option<DatasetRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_sequence_length: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gradient_accumulation_steps: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub learning_rate: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epochs: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora_rank: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora_alpha: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_interval: Option<i64>,
    // dn extensions (optional; see `TrainingExtras`): the reference SDK never sends them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    /// constant (default), linear or cosine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lr_scheduler: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup_steps: Option<i64>,
    /// Evaluate every this many steps (default: before and after training only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_interval: Option<i64>,
    /// PEFT short names, or `all-linear` (the default: every projection of the model's family).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora_target_modules: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_grad_norm: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_decay: Option<f64>,
    /// Recompute each block in the backward from its saved input (default: on for CUDA, off on the
    /// CPU).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gradient_checkpointing: Option<bool>,
    /// How the frozen base is held: `as_stored` (the default: a GGUF's or bitsandbytes' quantization
    /// kept), `none` (decoded at load), `nf4` or `q8_0` (projections quantized at load: QLoRA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_quantization: Option<String>,
    /// Experiment trackers the job reports to: `tensorboard` (event files in every checkpoint); `none` or
    /// absent: none (nothing leaves the node unasked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_to: Option<Vec<String>>,
    /// Keep only the newest N step checkpoints in storage (older ones are deleted once a newer one is
    /// committed); the final adapter is always kept. Default: keep all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub save_total_limit: Option<i64>,
    /// What the loss covers: `assistant` (every assistant message; the default), `last_assistant` (only
    /// each conversation's last one) or `all` (every token of the rendering). With the first two, an
    /// assistant message with OpenAI's `"weight": 0` is left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_on: Option<String>,
    /// Eval conversations completed greedily (cut before their last assistant turn, at most 256 new
    /// tokens) after each periodic evaluation and after training, logged as an `eval_samples` event with
    /// the prompt's last user message, the reference answer and the generated one. Default 4, 0: none,
    /// at most 64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_samples: Option<i64>,
    /// Most tokens packed into one forward/backward pass (a micro-batch is split into passes that fit;
    /// a longer example goes alone). Default: derived from the GPU's free memory on CUDA, 4096 on the CPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_pass: Option<i64>,
}

/// `CreateTinkerSFTJobRequest`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTinkerSftJobRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_ref: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_ref: Option<String>,
    pub capability_ref: CapabilityRef,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub backend: Backend,
    #[serde(default)]
    pub trainer_type: TrainerType,
    pub config: TinkerSftJobConfig,
}

/// Lifecycle of a job. `queued -> running -> completed | failed | cancelled`; retry sends failed/cancelled
/// jobs back to `queued`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    Queued,
    Running,
    Completed,
    Failed,
    Cancelled,
}

impl JobStatus {
    pub const ALL: [JobStatus; 5] = [
        JobStatus::Queued,
        JobStatus::Running,
        JobStatus::Completed,
        JobStatus::Failed,
        JobStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Completed => "completed",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Completed | JobStatus::Failed | JobStatus::Cancelled
        )
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| {
                format!("unknown status '{s}' (expected queued, running, completed, failed or cancelled)")
            })
    }
}

/// `TrainingCapabilitySnapshot`, plus the digests `dn` records when the job is created.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CapabilitySnapshot {
    /// The capability's content digest (`sha256:...`), which identifies the exact artifact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_id: Option<String>,
    pub name: String,
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_digest: Option<String>,
    /// Organization that owns the capability.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization_id: Option<String>,
    /// sha256 of the capability's files (`sha256:...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_digest: Option<String>,
    /// sha256 of the SFT system prompt derived from it (`sha256:...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_prompt_digest: Option<String>,
}

/// `TrainingJob`: the job record every route returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TrainingJob {
    pub id: String,
    pub organization_id: String,
    pub workspace_id: String,
    pub status: JobStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub backend: Backend,
    pub trainer_type: TrainerType,
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_ref: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_ref: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset_ref: Option<DatasetRef>,
    #[serde(default)]
    pub trajectory_dataset_refs: Vec<DatasetRef>,
    pub capability: CapabilitySnapshot,
    /// The effective configuration: the request's config with every default filled in.
    #[schema(value_type = Object)]
    pub config: Map<String, Value>,
    #[schema(value_type = Object)]
    pub metrics: Map<String, Value>,
    #[schema(value_type = Object)]
    pub artifacts: Map<String, Value>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel_requested_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
    /// How many times a worker has claimed this job (0 while never run). Also the fencing token.
    #[serde(default)]
    pub attempt: i64,
}

/// `TrainingJobList`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TrainingJobList {
    pub items: Vec<TrainingJob>,
    pub total: i64,
    pub page: i64,
    pub page_size: i64,
}

/// `TrainingLogLevel`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Debug,
    Info,
    Warning,
    Error,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warning => "warning",
            LogLevel::Error => "error",
        }
    }
}

impl FromStr for LogLevel {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "debug" => Ok(LogLevel::Debug),
            "info" => Ok(LogLevel::Info),
            "warning" => Ok(LogLevel::Warning),
            "error" => Ok(LogLevel::Error),
            other => Err(format!("unknown log level '{other}'")),
        }
    }
}

/// `TrainingJobLogEntry`. Progress events carry their type in `data.event`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TrainingJobLogEntry {
    pub timestamp: DateTime<Utc>,
    pub level: LogLevel,
    pub message: String,
    #[schema(value_type = Object)]
    #[serde(default)]
    pub data: Map<String, Value>,
}

/// `TrainingJobLogList`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TrainingJobLogList {
    pub items: Vec<TrainingJobLogEntry>,
}

/// `TrainingJobArtifacts`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TrainingJobArtifacts {
    #[schema(value_type = Object)]
    pub artifacts: Map<String, Value>,
}

/// The files of one committed checkpoint of a job (`dn`'s own route,
/// `GET .../jobs/{id}/checkpoints/{name}`); each downloads from `.../checkpoints/{name}/files/{path}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CheckpointFileList {
    /// `step-000010`, ..., `final`.
    pub name: String,
    pub files: Vec<CheckpointFile>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CheckpointFile {
    /// The file's name in the checkpoint directory, e.g. `adapter_model.safetensors`.
    pub path: String,
    pub size_bytes: u64,
}

/// The reference's progress event types (`TrainingProgressEventType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProgressEventType {
    TrainingStart,
    StepComplete,
    EvalComplete,
    CheckpointSaved,
    TrainingError,
    TrainingEnd,
}

/// `TrainingModel`: one entry of the catalog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TrainingModel {
    pub tinker_id: String,
    pub display_name: String,
    pub family: String,
    /// `dense` or `moe`.
    #[serde(rename = "type")]
    pub model_type: String,
    pub size_b: f64,
    /// A mixture of experts' active parameters per token, in billions (absent for a dense model).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_size_b: Option<f64>,
    pub context_length: i64,
    #[serde(default)]
    pub extended_context: bool,
    pub supported_algorithms: Vec<String>,
}

/// `TrainingCatalogResponse`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TrainingCatalogResponse {
    pub models: Vec<TrainingModel>,
    pub total: i64,
    pub limit: i64,
}

/// The body of every error response: the SDK reads `detail`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub detail: String,
    /// Stable machine-readable code (e.g. `not_found`, `validation_error`).
    pub code: String,
}

/// `GET /org/{org}/workspaces`: the workspaces that hold the organization's jobs, by name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkspaceList {
    pub items: Vec<String>,
}

/// `GET /whoami`: the organization of the caller's API key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WhoAmI {
    pub organization: String,
}

/// `GET /health`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HealthResponse {
    pub status: String,
    pub version: String,
}
