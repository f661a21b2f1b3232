//! The trainer's events as the reference reports them: log entries with an `event` field and the
//! reference's metric names, and the job's metrics and artifacts.

use dn_store::NewLogEntry;
use dn_train::{Event, StepRecord, TrainSummary};
use dn_types::{ArtifactRef, LogLevel, SftConfig, TrainingJob};
use serde_json::{Map, Value, json};

fn entry(message: String, data: Value) -> NewLogEntry {
    crate::progress::log_entry(LogLevel::Info, message, data)
}

/// A step's model TFLOP/s (as MFU counts FLOPs) and, given the device's peak FLOP/s, its MFU.
fn throughput(r: &StepRecord, peak_flops: Option<f64>) -> (f64, Option<f64>) {
    let flops_per_second = r.model_flops / r.step_seconds.max(1e-9);
    (
        flops_per_second / 1e12,
        peak_flops.map(|p| flops_per_second / p),
    )
}

/// One step's metrics as `step_complete` carries them (`train/mfu` when the device's peak is known).
pub fn step_data(r: &StepRecord, peak_flops: Option<f64>) -> Value {
    let (tflops, mfu) = throughput(r, peak_flops);
    let mut data = json!({
        "event": "step_complete",
        "step": r.step,
        "epoch": r.epoch,
        "train/loss": r.loss,
        "train/learning_rate": r.learning_rate,
        "train/grad_norm": r.grad_norm,
        "train/num_sequences": r.num_sequences,
        "train/num_tokens": r.num_tokens,
        "train/num_supervised_tokens": r.num_supervised_tokens,
        "train/step_seconds": r.step_seconds,
        "train/tokens_per_second": r.num_tokens as f64 / r.step_seconds.max(1e-9),
        "train/model_tflops_per_second": tflops,
    });
    if let Some(mfu) = mfu {
        data["train/mfu"] = json!(mfu);
    }
    if let Some(bytes) = r.device_memory_used {
        data["device_memory_used_bytes"] = json!(bytes);
    }
    data
}

/// The log entry of a trainer event (checkpoints are logged by the runner once uploaded).
pub fn event_entry(
    event: &Event,
    total_steps: u64,
    peak_flops: Option<f64>,
) -> Option<NewLogEntry> {
    Some(match event {
        Event::TrainingStart {
            total_steps,
            start_step,
            steps_per_epoch: _,
            examples,
            eval_examples,
            trainable_parameters,
            trainable_by_group,
            device,
            tokens_per_pass,
            base_memory,
        } => {
            let groups: Vec<String> = trainable_by_group
                .iter()
                .map(|(group, n)| format!("{group} {n}"))
                .collect();
            let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
            let base = match &base_memory.quantization {
                Some(format) => format!(
                    "; base in memory {:.1} MiB: {} weights kept {format} ({:.1} MiB) + {:.1} MiB dense",
                    mib(base_memory.quantized_bytes + base_memory.dense_bytes),
                    base_memory.quantized_weights,
                    mib(base_memory.quantized_bytes),
                    mib(base_memory.dense_bytes)
                ),
                None => format!(
                    "; base in memory {:.1} MiB, dense",
                    mib(base_memory.dense_bytes)
                ),
            };
            entry(
                format!(
                    "training started on {device}: {total_steps} step(s) over {examples} example(s), {trainable_parameters} trainable parameters ({}), up to {tokens_per_pass} tokens per pass{base}",
                    groups.join(", ")
                ),
                json!({"event": "training_start", "total_steps": total_steps, "start_step": start_step,
                       "num_examples": examples, "num_eval_examples": eval_examples,
                       "trainable_parameters": trainable_parameters,
                       "trainable_parameters_by_group": trainable_by_group.iter()
                           .map(|(g, n)| (g.to_string(), json!(n))).collect::<serde_json::Map<_, _>>(),
                       "device": device, "tokens_per_pass": tokens_per_pass,
                       "base_quantization": base_memory.quantization,
                       "base_quantized_bytes": base_memory.quantized_bytes,
                       "base_dense_bytes": base_memory.dense_bytes}),
            )
        }
        Event::PassShrunk {
            step,
            tokens_per_pass,
            error,
        } => crate::progress::log_entry(
            LogLevel::Warning,
            format!(
                "step {step} ran out of device memory: redoing it with up to {tokens_per_pass} tokens per pass ({error})"
            ),
            json!({"event": "pass_shrunk", "step": step, "tokens_per_pass": tokens_per_pass,
                   "error": error}),
        ),
        Event::StepComplete(r) => entry(
            format!(
                "step {}/{total_steps}: loss {:.4}, lr {:.2e}, {} tokens, {:.0} tokens/s{}",
                r.step,
                r.loss,
                r.learning_rate,
                r.num_tokens,
                r.num_tokens as f64 / r.step_seconds.max(1e-9),
                match throughput(r, peak_flops) {
                    (_, Some(mfu)) => format!(", MFU {:.1}%", 100.0 * mfu),
                    (tflops, None) => format!(", {tflops:.2} model TFLOP/s"),
                }
            ),
            step_data(r, peak_flops),
        ),
        Event::EvalComplete {
            step,
            loss,
            examples,
            tokens,
            router_load,
        } => entry(
            format!(
                "eval after step {step}: loss {loss:.4} over {examples} example(s){}",
                router_summary(router_load)
            ),
            json!({"event": "eval_complete", "step": step, "eval/loss": loss,
                   "eval/num_examples": examples, "eval/num_tokens": tokens,
                   "router_load": router_load.iter().map(|l| {
                       let (min, max) = l.min_max_share();
                       json!({"layer": l.layer, "tokens_per_expert": l.tokens,
                              "min_share": min, "max_share": max})
                   }).collect::<Vec<_>>()}),
        ),
        // Checkpoints are logged once stored; samples once decoded (by the training thread).
        Event::CheckpointSaved { .. } | Event::Sampling { .. } | Event::EvalSamples { .. } => {
            return None;
        }
    })
}

/// `; router load ...`: the least and most loaded experts' shares over the sparse layers (each layer's
/// tokens per expert are in the entry's data); empty for a dense model.
fn router_summary(load: &[dn_train::RouterLoad]) -> String {
    let shares: Vec<(usize, f64, f64)> = load
        .iter()
        .map(|l| {
            let (min, max) = l.min_max_share();
            (l.layer, min, max)
        })
        .collect();
    let (Some(low), Some(high)) = (
        shares.iter().min_by(|a, b| a.1.total_cmp(&b.1)),
        shares.iter().max_by(|a, b| a.2.total_cmp(&b.2)),
    ) else {
        return String::new();
    };
    let experts = load[0].tokens.len();
    format!(
        "; router load over {} sparse layer(s) of {experts} experts: least-used expert {:.1}% (layer {}), most-used {:.1}% (layer {}); even would be {:.1}%",
        load.len(),
        low.1 * 100.0,
        low.0,
        high.2 * 100.0,
        high.0,
        100.0 / experts as f64
    )
}

/// The metrics series and scalars (the reference's names) of the steps so far.
pub fn metrics(
    history: &[StepRecord],
    examples: usize,
    epochs_completed: f64,
    eval: Option<(f64, usize)>,
    device: &str,
) -> Map<String, Value> {
    let losses: Vec<f64> = history.iter().map(|r| r.loss).collect();
    let mut m = Map::new();
    m.insert(
        "steps".into(),
        json!(history.iter().map(|r| r.step).collect::<Vec<_>>()),
    );
    m.insert("train/loss".into(), json!(losses));
    m.insert(
        "train/learning_rate".into(),
        json!(history.iter().map(|r| r.learning_rate).collect::<Vec<_>>()),
    );
    m.insert("train/steps".into(), json!(history.len()));
    m.insert("train/num_examples".into(), json!(examples));
    let tokens: usize = history.iter().map(|r| r.num_tokens).sum();
    let seconds: f64 = history.iter().map(|r| r.step_seconds).sum();
    m.insert("train/num_tokens_processed".into(), json!(tokens));
    m.insert(
        "train/num_supervised_tokens_processed".into(),
        json!(
            history
                .iter()
                .map(|r| r.num_supervised_tokens)
                .sum::<usize>()
        ),
    );
    m.insert("train/seconds".into(), json!(seconds));
    m.insert(
        "train/tokens_per_second".into(),
        json!(tokens as f64 / seconds.max(1e-9)),
    );
    m.insert("train/epochs_completed".into(), json!(epochs_completed));
    if let Some(last) = losses.last() {
        m.insert("train/loss_last".into(), json!(last));
        m.insert(
            "train/loss_mean".into(),
            json!(losses.iter().sum::<f64>() / losses.len() as f64),
        );
        m.insert(
            "train/loss_best".into(),
            json!(losses.iter().cloned().fold(f64::INFINITY, f64::min)),
        );
    }
    if let Some((loss, n)) = eval {
        m.insert("eval/loss".into(), json!(loss));
        m.insert("eval/num_examples".into(), json!(n));
    }
    m.insert("device".into(), json!(device));
    m
}

/// Final metrics of a completed run.
pub fn final_metrics(summary: &TrainSummary, examples: usize, device: &str) -> Map<String, Value> {
    metrics(
        &summary.history,
        examples,
        summary.epochs_completed,
        summary.final_eval,
        device,
    )
}

/// The reference's artifacts (inputs by NAME@VERSION, checkpoints in order, last `final`) plus the
/// final adapter's URI.
pub fn artifacts(
    job: &TrainingJob,
    config: &SftConfig,
    checkpoints: &[Value],
) -> Map<String, Value> {
    let mut a = Map::new();
    a.insert(
        "capability".into(),
        json!(format!(
            "{}@{}",
            job.capability.name, job.capability.version
        )),
    );
    if let Some(d) = &config.dataset {
        a.insert("dataset".into(), json!(d.to_string()));
    }
    a.insert(
        "trajectory_datasets".into(),
        json!(
            config
                .trajectory_datasets
                .iter()
                .map(ArtifactRef::to_string)
                .collect::<Vec<_>>()
        ),
    );
    if let Some(d) = &config.eval_dataset {
        a.insert("eval_dataset".into(), json!(d.to_string()));
    }
    a.insert("checkpoints".into(), Value::Array(checkpoints.to_vec()));
    if let Some(last) = checkpoints.last()
        && last["name"] == "final"
    {
        a.insert("adapter".into(), last["uri"].clone());
    }
    a
}
