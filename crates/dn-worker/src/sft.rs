//! The SFT job runner: prepares the job's inputs (model, capability, datasets -> masked examples), trains
//! on a dedicated thread, turns the trainer's events into the job's logs and metrics, uploads each
//! committed checkpoint to storage, and stops at a step boundary on cancel or a lost lease.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use dn_registry::Registry;
use dn_train::{DeviceSpec, Event, StepRecord, TrainSummary};
use dn_types::{LogLevel, TrainingJob};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::inputs::{Preparation, PreparedInputs, prepare_inputs};
use crate::metrics::TrainingGauges;
use crate::mlflow::MlflowSettings;
use crate::report::{artifacts, event_entry, final_metrics, metrics};
use crate::resume::{ResumePoint, find_resume_point};
use crate::runner::{JobRunner, RunContext, RunError, RunOutput};
use crate::sandbox::Sandbox;
use crate::trackers::{AttemptStart, Trackers};
use crate::training::{TrainMessage, TrainRequest, TrainSignals, spawn_training};

pub struct SftRunner {
    registry: Registry,
    /// Local scratch space: checkpoints are written here, then uploaded to storage.
    work_dir: PathBuf,
    device: DeviceSpec,
    /// Data preparation in a memory-limited child process (`None`: in this process).
    sandbox: Option<Sandbox>,
    /// The device's peak FLOP/s for MFU (`None`: the GPU's known figure, if any).
    peak_flops: Option<f64>,
    /// What the node's `/metrics` shows of the running job.
    gauges: Option<Arc<TrainingGauges>>,
    /// The tracking server of jobs with `report_to: mlflow`.
    mlflow: Option<Arc<MlflowSettings>>,
}

impl SftRunner {
    pub fn new(registry: Registry, work_dir: PathBuf) -> Self {
        SftRunner {
            registry,
            work_dir,
            device: DeviceSpec::Auto,
            sandbox: None,
            peak_flops: None,
            gauges: None,
            mlflow: None,
        }
    }

    /// Jobs with `report_to: mlflow` report to this tracking server.
    pub fn with_mlflow(mut self, settings: MlflowSettings) -> Self {
        self.mlflow = Some(Arc::new(settings));
        self
    }

    /// Prepares each job's data in a child process under a memory limit (see [`Sandbox`]).
    pub fn with_sandbox(mut self, sandbox: Sandbox) -> Self {
        self.sandbox = Some(sandbox);
        self
    }

    /// Trains on `device` instead of the default `auto`.
    pub fn with_device(mut self, device: DeviceSpec) -> Self {
        self.device = device;
        self
    }

    /// Divides model FLOP/s by `peak` for the MFU of each step (instead of the GPU's known figure).
    pub fn with_peak_flops(mut self, peak: f64) -> Self {
        self.peak_flops = Some(peak);
        self
    }

    /// Reports the running job's progress to `gauges` (the node's `/metrics`).
    pub fn with_gauges(mut self, gauges: Arc<TrainingGauges>) -> Self {
        self.gauges = Some(gauges);
        self
    }
}

/// The `eval_samples` entry of the job's log.
async fn log_samples(ctx: &RunContext, step: u64, mut data: Value) -> Result<(), RunError> {
    let count = data["samples"].as_array().map_or(0, Vec::len);
    data["step"] = step.into();
    let message = format!("eval samples after step {step}: {count} generated");
    ctx.progress().log(LogLevel::Info, message, data).await
}

async fn log_prepared(
    inputs: &PreparedInputs,
    device: DeviceSpec,
    ctx: &RunContext,
) -> Result<(), RunError> {
    let s = &inputs.train_stats;
    let family = format!("{} family", inputs.family);
    let message = format!(
        "prepared {} training example(s) for a {family} model: {} tokens, {} supervised, {} truncated, {} dropped; {} row(s) skipped",
        s.examples,
        s.tokens,
        s.supervised_tokens,
        s.truncated,
        s.dropped_no_supervised,
        inputs.skipped_rows.len()
    );
    ctx.progress()
        .log(LogLevel::Info, message, inputs.summary())
        .await?;
    // Said once per job, whatever the number of conversations (train and eval counted together).
    let mut stats = s.clone();
    if let Some(eval) = &inputs.eval_stats {
        stats.system_merged_into_user += eval.system_merged_into_user;
        stats.system_dropped_by_template += eval.system_dropped_by_template;
    }
    // A GPU this node cannot use: every job says so, not only the worker's start.
    if let Some(warning) = dn_train::device_warning(device) {
        ctx.progress()
            .log(
                LogLevel::Warning,
                warning.clone(),
                json!({"event": "device_warning", "warning": warning}),
            )
            .await?;
    }
    for note in stats.system_notes() {
        ctx.progress()
            .log(LogLevel::Warning, note, json!({"event": "system_prompt"}))
            .await?;
    }
    for row in inputs.skipped_rows.iter().take(20) {
        ctx.progress()
            .log(LogLevel::Warning, format!("skipped {row}"), json!({}))
            .await?;
    }
    Ok(())
}

/// What the runner has seen of a run so far.
#[derive(Default)]
struct RunState {
    total_steps: u64,
    steps_per_epoch: u64,
    save_total_limit: Option<u32>,
    device: String,
    /// Peak FLOP/s of the device for MFU (`None`: unknown, MFU not reported).
    peak_flops: Option<f64>,
    /// The job's experiment trackers (`report_to`).
    trackers: Trackers,
    history: Vec<StepRecord>,
    checkpoints: Vec<Value>,
    eval: Option<(f64, usize)>,
}

impl RunState {
    /// Passes over the training examples done by the last recorded step.
    fn epochs_completed(&self) -> f64 {
        match (self.history.last(), self.steps_per_epoch) {
            (Some(last), spe) if spe > 0 => last.step as f64 / spe as f64,
            _ => 0.0,
        }
    }

    fn metrics(&self, examples: usize) -> serde_json::Map<String, Value> {
        metrics(
            &self.history,
            examples,
            self.epochs_completed(),
            self.eval,
            &self.device,
        )
    }
}

/// What a scratch-space check writes: a disk with less room than this fails it.
const SCRATCH_PROBE_BYTES: usize = 1 << 20;

#[async_trait]
impl JobRunner for SftRunner {
    /// Storage takes a write, and the scratch directory a 1 MiB file.
    async fn check_infrastructure(&self) -> Result<(), String> {
        self.registry
            .check_writable()
            .await
            .map_err(|e| format!("storage {}: {e}", self.registry.location()))?;
        let probe = self
            .work_dir
            .join(format!(".probe-{}", uuid::Uuid::new_v4().simple()));
        let written = async {
            tokio::fs::create_dir_all(&self.work_dir).await?;
            tokio::fs::write(&probe, vec![0u8; SCRATCH_PROBE_BYTES]).await
        }
        .await;
        let _ = tokio::fs::remove_file(&probe).await;
        written.map_err(|e| format!("scratch space {}: {e}", self.work_dir.display()))
    }

    async fn run(&self, job: &TrainingJob, ctx: &RunContext) -> Result<RunOutput, RunError> {
        let outcome = self.run_job(job, ctx).await;
        if let Some(gauges) = &self.gauges {
            gauges.finished();
        }
        outcome
    }
}

impl SftRunner {
    async fn run_job(&self, job: &TrainingJob, ctx: &RunContext) -> Result<RunOutput, RunError> {
        if !std::path::Path::new(&job.model).exists() {
            // A hub id: the first use on this node downloads the model, which can take a while.
            let message = format!(
                "model {}: from the Hugging Face hub cache, downloading what is missing",
                job.model
            );
            let data = json!({"event": "model_fetch", "model": job.model});
            ctx.progress().log(LogLevel::Info, message, data).await?;
        }
        // Data preparation stops within a poll of a cancel request or a lost lease (the rendering still
        // running on other threads gives up on the conversations it has not reached).
        let stop = Arc::new(AtomicBool::new(false));
        let preparation = Preparation {
            sandbox: self.sandbox.as_ref(),
            scratch: self.work_dir.join("prepare").join(format!(
                "{}-{}",
                job.id,
                uuid::Uuid::new_v4().simple()
            )),
        };
        let prepared = prepare_inputs(&self.registry, job, self.device, preparation, stop.clone());
        let interrupted = async {
            while !ctx.cancel_requested() && !ctx.lease_lost() {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        };
        let inputs = tokio::select! {
            inputs = prepared => inputs?,
            () = interrupted => {
                stop.store(true, Ordering::SeqCst);
                ctx.progress().ensure_lease().await?;
                return Err(RunError::Cancelled { partial: Box::default() });
            }
        };
        log_prepared(&inputs, self.device, ctx).await?;
        if ctx.cancel_requested() {
            return Err(RunError::Cancelled {
                partial: Box::default(),
            });
        }
        let model = job.model.clone();
        let model_path =
            tokio::task::spawn_blocking(move || dn_model::resolve_model_for_training(&model))
                .await
                .map_err(|e| RunError::failed(format!("model {}: {e}", job.model)))?
                .map_err(|e| RunError::failed(e.to_string()))?;
        let job_dir = self.work_dir.join(&job.id);
        let config = inputs.config.clone();
        let examples = inputs.train.len();
        let mut state = RunState {
            save_total_limit: config.extras.save_total_limit,
            ..RunState::default()
        };
        let resume = find_resume_point(&self.registry, job, &job_dir.join("resume")).await?;
        if let Some(point) = &resume {
            log_resumed(point, job, ctx).await?;
            state.history = point.state.history.clone();
            state.checkpoints = point.checkpoints.clone();
        }
        if ctx.preempt_requested() {
            return Err(RunError::Preempted);
        }
        let start = AttemptStart {
            job,
            config: &config,
            resuming: resume.is_some(),
            history: &state.history,
            staging: job_dir.join("tracker-uploads"),
        };
        state.trackers = Trackers::start(start, self.mlflow.as_ref());
        let signals = TrainSignals::default();
        let stop = signals.stop.clone();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let request = TrainRequest {
            device: self.device,
            model_path,
            model_name: job.model.clone(),
            inputs,
            checkpoint_dir: job_dir.join("checkpoints"),
            resume: resume.map(|p| p.dir),
        };
        spawn_training(request, signals.clone(), tx)
            .map_err(|e| RunError::transient(format!("cannot start the training thread: {e}")))?;

        let mut lease_lost = false;
        // A failure on this side (e.g. storing a checkpoint) stops the trainer; the loop still drains its
        // messages until it is done, so nothing writes into the job's scratch after we return.
        let mut failure: Option<RunError> = None;
        let outcome = loop {
            let message = tokio::select! {
                m = rx.recv() => m,
                _ = tokio::time::sleep(Duration::from_millis(200)) => {
                    steer(ctx, &signals);
                    continue;
                }
            };
            steer(ctx, &signals);
            // After a failure or a lost lease the thread is only drained until it is done.
            let draining = failure.is_some() || lease_lost;
            let recorded = match message {
                Some(TrainMessage::Event(_) | TrainMessage::Samples { .. }) if draining => continue,
                Some(TrainMessage::Event(event)) => {
                    self.on_event(job, ctx, &event, &mut state, examples).await
                }
                Some(TrainMessage::Samples { step, data }) => log_samples(ctx, step, data).await,
                Some(TrainMessage::Done(result)) => match failure.take() {
                    Some(e) => break Err(e),
                    None => break Ok(result),
                },
                None => {
                    break Err(RunError::transient(
                        "the training thread stopped without a result",
                    ));
                }
            };
            if let Err(e) = recorded {
                stop.store(true, Ordering::SeqCst);
                if matches!(e, RunError::LeaseLost) {
                    lease_lost = true;
                } else {
                    failure = Some(e);
                }
            }
        };
        let partial = || {
            Box::new(RunOutput {
                metrics: state.metrics(examples),
                artifacts: artifacts(job, &config, &state.checkpoints),
            })
        };
        let result = match outcome {
            Ok(Ok(summary)) => {
                self.completed(job, ctx, &config, &summary, &state, examples)
                    .await
            }
            Ok(Err(dn_train::Error::Stopped { .. })) if lease_lost || ctx.lease_lost() => {
                Err(RunError::LeaseLost)
            }
            Ok(Err(dn_train::Error::Stopped { .. }))
                if ctx.preempt_requested() && !ctx.cancel_requested() =>
            {
                Err(RunError::Preempted)
            }
            Ok(Err(dn_train::Error::Stopped { .. })) => {
                Err(RunError::Cancelled { partial: partial() })
            }
            Ok(Err(e)) => {
                let message = format!("training failed: {e}");
                let _ = ctx
                    .progress()
                    .log(
                        LogLevel::Error,
                        message.clone(),
                        json!({"event": "training_error", "error": message}),
                    )
                    .await;
                // Writing a checkpoint (disk full) or a device error may not happen again; a model or
                // configuration the trainer refuses will.
                let retryable = matches!(
                    e,
                    dn_train::Error::Checkpoint { .. } | dn_train::Error::Tensor(_)
                );
                Err(RunError::Failed {
                    message,
                    partial: partial(),
                    retryable,
                })
            }
            Err(e) => Err(e),
        };
        let trackers = std::mem::take(&mut state.trackers);
        for warning in trackers.finish(&result).await {
            // After a lost lease nothing more is written.
            let _ = log_tracker_warning(ctx, warning).await;
        }
        let _ = tokio::fs::remove_dir_all(&job_dir).await;
        result
    }
}

/// Passes cancel, a lost lease and preemption on to the trainer.
fn steer(ctx: &RunContext, signals: &TrainSignals) {
    if ctx.cancel_requested() || ctx.lease_lost() {
        signals.stop.store(true, Ordering::SeqCst);
    }
    if ctx.preempt_requested() {
        signals.suspend.store(true, Ordering::SeqCst);
    }
}

async fn log_tracker_warning(ctx: &RunContext, warning: String) -> Result<(), RunError> {
    ctx.progress()
        .log(
            LogLevel::Warning,
            warning,
            json!({"event": "tracker_warning"}),
        )
        .await
}

async fn log_resumed(
    point: &ResumePoint,
    job: &TrainingJob,
    ctx: &RunContext,
) -> Result<(), RunError> {
    let data = json!({"event": "resumed", "checkpoint": point.name, "step": point.state.step,
                      "attempt": job.attempt});
    let message = format!(
        "resuming from checkpoint {} at step {}/{}",
        point.name, point.state.step, point.state.total_steps
    );
    ctx.progress().log(LogLevel::Info, message, data).await
}

impl SftRunner {
    async fn on_event(
        &self,
        job: &TrainingJob,
        ctx: &RunContext,
        event: &Event,
        state: &mut RunState,
        examples: usize,
    ) -> Result<(), RunError> {
        for warning in state.trackers.take_warnings() {
            log_tracker_warning(ctx, warning).await?;
        }
        match event {
            Event::TrainingStart {
                total_steps,
                start_step,
                steps_per_epoch,
                device,
                ..
            } => {
                state.total_steps = *total_steps;
                state.steps_per_epoch = *steps_per_epoch;
                state.device = device.clone();
                state.peak_flops = self.peak_flops.or_else(|| dn_train::peak_flops(device));
                if let Some(gauges) = &self.gauges {
                    gauges.started(&job.id, *start_step, *total_steps);
                }
            }
            Event::StepComplete(record) => {
                if let Some(gauges) = &self.gauges {
                    gauges.step(record, state.peak_flops);
                }
                state.trackers.step(record, state.peak_flops);
                state.history.push(record.clone());
            }
            Event::Sampling { .. } | Event::EvalSamples { .. } | Event::PassShrunk { .. } => {}
            Event::EvalComplete {
                step,
                loss,
                examples: n,
                ..
            } => {
                if let Some(gauges) = &self.gauges {
                    gauges.eval(*loss);
                }
                state.trackers.eval(*step, *loss);
                state.eval = Some((*loss, *n));
            }
            Event::CheckpointSaved { step, name, path } => {
                let storage = |e: dn_registry::Error| {
                    RunError::storage(format!("cannot store checkpoint {name}"), &e)
                };
                let org = &job.organization_id;
                state.trackers.checkpoint(name, path)?;
                self.registry
                    .upload_checkpoint_files(org, &job.id, name, path)
                    .await
                    .map_err(storage)?;
                // A worker that lost the job while uploading commits nothing: the attempt that took over
                // owns the job's checkpoints now.
                ctx.progress().ensure_lease().await?;
                let uri = self
                    .registry
                    .commit_checkpoint(org, &job.id, name)
                    .await
                    .map_err(storage)?;
                state
                    .checkpoints
                    .push(json!({"name": name, "step": step, "uri": uri}));
                // Uploaded: the local copy is not read again.
                let _ = tokio::fs::remove_dir_all(path).await;
                self.prune_checkpoints(job, ctx, state).await?;
                let data =
                    json!({"event": "checkpoint_saved", "step": step, "name": name, "uri": uri});
                return ctx
                    .progress()
                    .log(
                        LogLevel::Info,
                        format!("checkpoint {name} saved: {uri}"),
                        data,
                    )
                    .await;
            }
        }
        let Some(entry) = event_entry(event, state.total_steps, state.peak_flops) else {
            return Ok(());
        };
        let metrics = matches!(event, Event::StepComplete(_)).then(|| state.metrics(examples));
        ctx.progress().report(&[entry], metrics.as_ref()).await
    }

    /// With `save_total_limit`, deletes the oldest step checkpoints beyond the limit (after a newer one
    /// was committed, so a resumable checkpoint always exists); `final` is never deleted.
    async fn prune_checkpoints(
        &self,
        job: &TrainingJob,
        ctx: &RunContext,
        state: &mut RunState,
    ) -> Result<(), RunError> {
        let Some(limit) = state.save_total_limit else {
            return Ok(());
        };
        let is_step = |c: &Value| c["name"].as_str().is_some_and(|n| n.starts_with("step-"));
        while state.checkpoints.iter().filter(|c| is_step(c)).count() > limit as usize {
            let oldest = state.checkpoints.iter().position(is_step).expect("counted");
            let name = state.checkpoints[oldest]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            self.registry
                .delete_checkpoint(&job.organization_id, &job.id, &name)
                .await
                .map_err(|e| RunError::storage(format!("cannot delete checkpoint {name}"), &e))?;
            state.checkpoints.remove(oldest);
            let data = json!({"event": "checkpoint_deleted", "name": name});
            ctx.progress()
                .log(
                    LogLevel::Info,
                    format!("checkpoint {name} deleted (save_total_limit {limit})"),
                    data,
                )
                .await?;
        }
        Ok(())
    }

    async fn completed(
        &self,
        job: &TrainingJob,
        ctx: &RunContext,
        config: &dn_types::SftConfig,
        summary: &TrainSummary,
        state: &RunState,
        examples: usize,
    ) -> Result<RunOutput, RunError> {
        let metrics = final_metrics(summary, examples, &state.device);
        let mut data = serde_json::Map::new();
        data.insert("event".into(), json!("training_end"));
        data.insert("train/steps".into(), json!(summary.history.len()));
        data.insert("train/loss_last".into(), metrics["train/loss_last"].clone());
        if let Some((loss, _)) = summary.final_eval {
            data.insert("eval/loss".into(), json!(loss));
        }
        let message = match summary.final_eval {
            Some((loss, _)) => format!(
                "training finished: {} step(s), final loss {:.4}, eval loss {loss:.4}",
                summary.history.len(),
                summary.history.last().map_or(0.0, |r| r.loss)
            ),
            None => format!(
                "training finished: {} step(s), final loss {:.4}",
                summary.history.len(),
                summary.history.last().map_or(0.0, |r| r.loss)
            ),
        };
        ctx.progress().log(LogLevel::Info, message, data).await?;
        Ok(RunOutput {
            metrics,
            artifacts: artifacts(job, config, &state.checkpoints),
        })
    }
}
