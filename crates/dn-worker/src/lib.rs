//! The worker daemon: claims queued jobs from the store, keeps their lease alive with heartbeats, hands each
//! job to a [`JobRunner`], and records how it ended. Several workers (in one process or many) may share a
//! store; the store's guarded updates make every claim exclusive.
//!
//! `worker` is the daemon loop: reap expired leases, claim, run the attempt; back off while the database is
//! away, exit once it stays away `exit_after_outage_seconds` while idle, wait a lease after reconnecting
//! before reaping, claim nothing while a failed infrastructure check stands. `attempt`: a heartbeat task
//! (lease renewal every `heartbeat`, a cancel read every second between), the runner on its own task in a
//! span per job (a panic fails the attempt instead of stranding the job), then how the attempt ends:
//! completed, cancelled, failed, a retryable failure within `max_retries` back to the queue after a jittered
//! exponential backoff, or, when the infrastructure failed it (`RunError::Unavailable`, or a retryable
//! failure while the database, storage or scratch space fails its check), released without spending a retry;
//! recorded while the database is away with pauses of at most a quarter lease, so the worker writes before a
//! reconnecting reaper may. On shutdown the job is asked to checkpoint and is released within the grace
//! period. Reaping a lost worker's lease spends a retry (failed once `max_retries` are spent). `progress`:
//! the handle fenced by the lease; while the database is away entries and metrics are kept in memory and
//! written in order by the next report that gets through, until the lease's deadline as the worker's
//! `LeaseClock` knows it (the last renewal that reached the database).
//!
//! `SftRunner` is the runner that trains: `inputs` (resolve the model and capability, download the dataset
//! files to scratch, prepare), `dataprep` (files -> examples: decode, normalize, render; plain data in and
//! out; files memory-mapped and rows decoded as they are asked for, so a preview stops at its limit),
//! `sandbox` (the same in a child process `dn prepare-data` under `RLIMIT_DATA`, reporting on its stdout the
//! file it decodes and the rows it renders so that a death for memory names them; results through a binary
//! file; killed when the job is cancelled), `resume` (the job's latest committed checkpoint from storage),
//! `training` (the trainer thread, job config -> options, stop/suspend signals), `report` (events -> the
//! reference's log entries, metrics and artifacts), `sft` (the orchestration: each checkpoint uploaded,
//! committed only while the lease holds, its local copy removed, older ones deleted beyond
//! `save_total_limit`).

mod attempt;
mod dataprep;
mod inputs;
mod metrics;
mod mlflow;
mod preview;
mod progress;
mod report;
mod resume;
mod runner;
mod sandbox;
mod sft;
mod tensorboard;
mod trackers;
mod training;
mod worker;

pub use dataprep::{DataFile, PrepareFailure, PrepareRequest, PreparedGroup, prepare_groups};
pub use inputs::{Preparation, PreparedInputs, prepare_inputs};
pub use metrics::TrainingGauges;
pub use mlflow::{MlflowAuth, MlflowSettings};
pub use preview::{PreviewRequest, prepare_group, preview_dataset};
pub use runner::{Fault, JobRunner, Progress, RunContext, RunError, RunOutput, UnavailableTrainer};
pub use sandbox::{Sandbox, default_memory_limit, describe_exit, run_child};
pub use sft::SftRunner;
pub use tensorboard::EventFile;
pub use training::{check_device, lora_config, train_options};
pub use worker::{Worker, WorkerConfig, job_queued};
