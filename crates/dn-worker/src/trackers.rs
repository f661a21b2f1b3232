//! The job's experiment trackers (`report_to`), fed from the runner's events: TensorBoard's event file
//! (written into each checkpoint directory before its upload) and the MLflow run (queued to its task).
//! Neither holds training up: the event file is built in memory, MLflow's reports are queued.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use dn_spec::Tracker;
use dn_train::StepRecord;
use dn_types::{SftConfig, TrainingJob};

use crate::mlflow::{MlflowReporter, MlflowSettings};
use crate::runner::RunError;
use crate::tensorboard::{self, EventFile};

#[derive(Default)]
pub(crate) struct Trackers {
    tensorboard: Option<EventFile>,
    mlflow: Option<MlflowReporter>,
    /// Said before any tracker had something to say (e.g. MLflow asked for but not set up here).
    pending: Vec<String>,
}

/// Where an attempt starts from.
pub(crate) struct AttemptStart<'a> {
    pub job: &'a TrainingJob,
    pub config: &'a SftConfig,
    /// It resumes from a checkpoint, after these steps.
    pub resuming: bool,
    pub history: &'a [StepRecord],
    /// Scratch for checkpoint files waiting for their MLflow upload.
    pub staging: PathBuf,
}

impl Trackers {
    /// The trackers the job's `report_to` names.
    pub fn start(start: AttemptStart<'_>, mlflow: Option<&Arc<MlflowSettings>>) -> Trackers {
        let mut trackers = Trackers::default();
        let report_to = &start.config.extras.report_to;
        if report_to.contains(&Tracker::TensorBoard) {
            // A resumed attempt's file holds the steps before it too (stamped with its start).
            let now = tensorboard::wall_time();
            let mut file = EventFile::new(now, &tensorboard::host_name());
            for r in start.history {
                file.scalars(now, r.step as i64, &tensorboard::step_scalars(r, None));
            }
            trackers.tensorboard = Some(file);
        }
        if report_to.contains(&Tracker::Mlflow) {
            match mlflow {
                None => trackers.pending.push(
                    "report_to mlflow: this worker has no MLFLOW_TRACKING_URI, so this job reports nothing \
                     to MLflow (its metrics are in dn as always)"
                        .to_owned(),
                ),
                Some(settings) => match MlflowReporter::start(
                    settings.clone(),
                    start.job,
                    start.config,
                    start.resuming,
                    start.history,
                    start.staging,
                ) {
                    Ok(reporter) => trackers.mlflow = Some(reporter),
                    Err(e) => trackers.pending.push(format!("report_to mlflow: {e}")),
                },
            }
        }
        trackers
    }

    pub fn step(&mut self, record: &StepRecord, peak_flops: Option<f64>) {
        if let Some(file) = &mut self.tensorboard {
            let values = tensorboard::step_scalars(record, peak_flops);
            file.scalars(tensorboard::wall_time(), record.step as i64, &values);
        }
        if let Some(mlflow) = &mut self.mlflow {
            mlflow.step(record, peak_flops);
        }
    }

    pub fn eval(&mut self, step: u64, loss: f64) {
        if let Some(file) = &mut self.tensorboard {
            file.scalars(
                tensorboard::wall_time(),
                step as i64,
                &[("eval/loss", loss)],
            );
        }
        if let Some(mlflow) = &mut self.mlflow {
            mlflow.eval(step, loss);
        }
    }

    /// Checkpoint `name` was written to `dir` and is about to be uploaded: the event file goes in, and
    /// MLflow's copy is staged.
    pub fn checkpoint(&mut self, name: &str, dir: &Path) -> Result<(), RunError> {
        if let Some(file) = &self.tensorboard {
            file.write_into(dir).map_err(|e| {
                RunError::transient(format!(
                    "cannot write the TensorBoard event file into checkpoint {name}: {e}"
                ))
            })?;
        }
        if let Some(mlflow) = &mut self.mlflow {
            mlflow.checkpoint(name, dir);
        }
        Ok(())
    }

    /// Warnings for the job log since the last call.
    pub fn take_warnings(&mut self) -> Vec<String> {
        let mut warnings = std::mem::take(&mut self.pending);
        if let Some(mlflow) = &self.mlflow {
            warnings.extend(mlflow.take_warnings());
        }
        warnings
    }

    /// The attempt ended with `outcome`: MLflow's run gets its status (left running when another attempt
    /// will continue it). The warnings not taken yet.
    pub async fn finish<T>(mut self, outcome: &Result<T, RunError>) -> Vec<String> {
        let mut warnings = std::mem::take(&mut self.pending);
        if let Some(mlflow) = self.mlflow.take() {
            let status = match outcome {
                Ok(_) => Some("FINISHED"),
                Err(RunError::Cancelled { .. }) => Some("KILLED"),
                Err(RunError::Failed { .. }) => Some("FAILED"),
                Err(RunError::Unavailable { .. } | RunError::LeaseLost | RunError::Preempted) => {
                    None
                }
            };
            warnings.extend(mlflow.finish(status).await);
        }
        warnings
    }
}
