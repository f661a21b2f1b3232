//! The runner interface between the worker loop and whatever executes a job (the trainer, in the next
//! issues), and the progress handle a runner reports through.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use dn_types::TrainingJob;
use serde_json::{Map, Value};

pub use crate::progress::Progress;

/// What a runner hands back when a job completed.
#[derive(Debug, Clone, Default)]
pub struct RunOutput {
    pub metrics: Map<String, Value>,
    pub artifacts: Map<String, Value>,
}

/// Why a run did not complete.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Stopped at a safe point because cancel was requested.
    #[error("cancelled")]
    Cancelled { partial: Box<RunOutput> },
    /// The attempt failed: the message becomes the job's `error`. `retryable` failures (storage or
    /// database trouble, a crash, a device error) get another attempt within the worker's retry budget;
    /// the others (bad input, a model that cannot load) fail the job at once.
    #[error("{message}")]
    Failed {
        message: String,
        partial: Box<RunOutput>,
        retryable: bool,
    },
    /// What the job needs could not be reached (the database until the lease ran out, storage, a full
    /// disk): not the job's fault. The job goes back to the queue without spending a retry once the
    /// database answers again.
    #[error("{message}")]
    Unavailable { message: String },
    /// This worker lost the job's lease; nothing more may be written.
    #[error("lease lost")]
    LeaseLost,
    /// Stopped at a safe point (after a checkpoint) because the worker is shutting down: the job goes back
    /// to the queue, not to a terminal status.
    #[error("preempted")]
    Preempted,
}

impl RunError {
    /// A failure of the job's input: another attempt would repeat it.
    pub fn failed(message: impl Into<String>) -> Self {
        RunError::of(message, Fault::Input)
    }

    /// A failure whose fault its source established ([`Fault`]): the node's gets another attempt.
    pub fn of(message: impl Into<String>, fault: Fault) -> Self {
        RunError::Failed {
            message: message.into(),
            partial: Box::default(),
            retryable: fault == Fault::Node,
        }
    }

    /// An I/O failure: the node's when it ran out of a resource ([`Fault::of_io`]), else the input's.
    pub fn io(message: impl std::fmt::Display, error: &std::io::Error) -> Self {
        RunError::of(format!("{message}: {error}"), Fault::of_io(error))
    }

    /// A failure of storage: `Unavailable` when storage could not be reached or take the operation
    /// (after its retries), else a failure another attempt may not meet.
    pub fn storage(message: impl Into<String>, error: &dn_registry::Error) -> Self {
        let message = format!("{}: {error}", message.into());
        match error.is_unavailable() {
            true => RunError::Unavailable { message },
            false => RunError::transient(message),
        }
    }

    /// A failure another attempt may not meet.
    pub fn transient(message: impl Into<String>) -> Self {
        RunError::Failed {
            message: message.into(),
            partial: Box::default(),
            retryable: true,
        }
    }
}

/// Whose fault a failure is, decided where the error arose (from the error's type, never its text) and
/// carried with it, across the preparation child's result file too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Fault {
    /// The job's input or options: another attempt would fail the same way.
    Input,
    /// The node ran out of a resource (file descriptors, memory, disk): another attempt may not.
    Node,
}

impl Fault {
    /// The node's for an OS error of a node short of a resource: too many open files (EMFILE, ENFILE), out
    /// of memory (ENOMEM), no space left (ENOSPC), no process to spare (EAGAIN); else the input's.
    pub fn of_io(error: &std::io::Error) -> Fault {
        match error.raw_os_error() {
            Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM | libc::ENOSPC | libc::EAGAIN) => {
                Fault::Node
            }
            _ => Fault::Input,
        }
    }
}

/// Runs one claimed job. Implementations do CPU/GPU work on their own threads, never on the async runtime,
/// and check [`RunContext::cancel_requested`] between steps.
#[async_trait]
pub trait JobRunner: Send + Sync + 'static {
    async fn run(&self, job: &TrainingJob, ctx: &RunContext) -> Result<RunOutput, RunError>;

    /// Whether what this runner needs besides the database (storage, scratch space) works now: after an
    /// attempt failed, a failing check says the infrastructure failed it, not the job. `Err` says what.
    async fn check_infrastructure(&self) -> Result<(), String> {
        Ok(())
    }
}

/// The runner of a worker with no trainer: every job fails with a clear error, never a fake success.
#[derive(Debug, Default, Clone, Copy)]
pub struct UnavailableTrainer;

#[async_trait]
impl JobRunner for UnavailableTrainer {
    async fn run(&self, _job: &TrainingJob, _ctx: &RunContext) -> Result<RunOutput, RunError> {
        Err(RunError::failed("trainer not available"))
    }
}

/// What a runner may touch while it runs: the progress handle and the cancel flag.
#[derive(Clone)]
pub struct RunContext {
    pub(crate) progress: Progress,
    pub(crate) cancel: Arc<AtomicBool>,
    pub(crate) lease_lost: Arc<AtomicBool>,
    pub(crate) preempt: Arc<AtomicBool>,
}

impl RunContext {
    pub fn progress(&self) -> &Progress {
        &self.progress
    }

    /// Set by the heartbeat when someone asked to cancel this job.
    pub fn cancel_requested(&self) -> bool {
        self.cancel.load(Ordering::SeqCst)
    }

    /// Set by the heartbeat when this worker no longer owns the job.
    pub fn lease_lost(&self) -> bool {
        self.lease_lost.load(Ordering::SeqCst)
    }

    /// Set when the worker is shutting down (SIGTERM): checkpoint at the next safe point and give the job
    /// back.
    pub fn preempt_requested(&self) -> bool {
        self.preempt.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_short_of_file_descriptors_or_memory_is_no_bad_input() {
        for code in [libc::EMFILE, libc::ENOMEM, libc::ENOSPC] {
            let error = std::io::Error::from_raw_os_error(code);
            assert!(matches!(
                RunError::io("tokenizer.json", &error),
                RunError::Failed {
                    retryable: true,
                    ..
                }
            ));
        }
        let missing = std::io::Error::from_raw_os_error(libc::ENOENT);
        // The text of an input error that merely mentions an OS error is still the input's.
        for bad in [
            RunError::io("train.jsonl", &missing),
            RunError::failed("dataset d@1.0.0: row 3: says (os error 24)"),
        ] {
            assert!(matches!(
                bad,
                RunError::Failed {
                    retryable: false,
                    ..
                }
            ));
        }
    }
}
