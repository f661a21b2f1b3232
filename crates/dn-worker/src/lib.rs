//! The worker daemon: claims queued jobs from the store, keeps their lease alive with heartbeats, hands each
//! job to a [`JobRunner`], and records how it ended. Several workers (in one process or many) may share a
//! store; the store's guarded updates make every claim exclusive.

mod attempt;
mod dataprep;
mod inputs;
mod preview;
mod progress;
mod report;
mod resume;
mod runner;
mod sandbox;
mod sft;
mod training;
mod worker;

pub use dataprep::{DataFile, PrepareRequest, PreparedGroup, prepare_groups};
pub use inputs::{Preparation, PreparedInputs, prepare_inputs};
pub use preview::{PreviewRequest, prepare_group, preview_dataset};
pub use runner::{JobRunner, Progress, RunContext, RunError, RunOutput, UnavailableTrainer};
pub use sandbox::{Sandbox, default_memory_limit, describe_exit, run_child};
pub use sft::SftRunner;
pub use training::{check_device, lora_config, train_options};
pub use worker::{Worker, WorkerConfig, job_queued};
