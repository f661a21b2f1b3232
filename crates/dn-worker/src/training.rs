//! The trainer on its own OS thread (CPU-bound work never runs on the async runtime): loads the base
//! model, builds the LoRA model from the job's config and runs the loop, sending every event back.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use dn_train::{
    AdamWConfig, BaseModel, Control, DeviceSpec, Event, LoraConfig, LoraModel, ModelConfig,
    SamplingOptions, TrainExample, TrainOptions, TrainSummary, Trainer, available_memory,
    base_dtype, check_fits, device_label, estimate_memory_as, select_device,
    tokens_per_pass_for_memory,
};
use dn_types::SftConfig;
use tokio::sync::mpsc::UnboundedSender;

use crate::inputs::PreparedInputs;

pub enum TrainMessage {
    Event(Event),
    /// The eval samples' texts after `step`: the `eval_samples` log event's data.
    Samples {
        step: u64,
        data: serde_json::Value,
    },
    Done(dn_train::Result<TrainSummary>),
}

/// The trainer's options from a job's effective config.
pub fn train_options(config: &SftConfig) -> TrainOptions {
    let x = &config.extras;
    let defaults = TrainOptions::default();
    TrainOptions {
        learning_rate: config.learning_rate,
        batch_size: config.batch_size as usize,
        gradient_accumulation_steps: config.gradient_accumulation_steps as usize,
        steps: config.steps.map(u64::from),
        epochs: config.epochs.map(u64::from),
        checkpoint_interval: u64::from(config.checkpoint_interval),
        eval_interval: u64::from(x.eval_interval),
        seed: x.seed,
        adam: AdamWConfig {
            weight_decay: x.weight_decay,
            ..defaults.adam.clone()
        },
        max_grad_norm: x.max_grad_norm,
        schedule: x.lr_scheduler,
        warmup_steps: u64::from(x.warmup_steps),
        recompute: x.gradient_checkpointing,
        ..defaults
    }
}

/// Refuses a job whose estimated memory (weights, LoRA state, one pass's activations) exceeds what the
/// device has free now, naming the fields to change; decided from `config.json` before any weights are
/// loaded or downloaded. A device whose free memory cannot be told is not checked.
/// `longest` is the longest prepared example in tokens (1 before the data is prepared: the weights and
/// the LoRA state must fit whatever the data).
pub fn check_memory(
    model: &ModelConfig,
    config: &SftConfig,
    device_spec: DeviceSpec,
    longest: usize,
) -> Result<(), String> {
    let device = select_device(device_spec).map_err(|e| e.to_string())?;
    let lora = lora_config(config)
        .resolve(model)
        .map_err(|e| e.to_string())?;
    let longest = longest.clamp(1, config.max_sequence_length.max(1) as usize);
    // A pass packs up to `tokens_per_pass` tokens of one micro-batch; a longer example goes alone. On
    // CUDA with no setting, passes are sized from the memory left (one example at least must fit).
    let per_pass = match config.extras.tokens_per_pass {
        Some(tokens) => tokens as usize,
        None if device.is_cuda() => longest,
        None => TrainOptions::default().tokens_per_pass,
    };
    let tokens = (config.batch_size as usize * longest).min(per_pass.max(longest));
    let recompute = config
        .extras
        .gradient_checkpointing
        .unwrap_or(device.is_cuda());
    let estimate = estimate_memory_as(
        model,
        &lora,
        &device,
        tokens,
        recompute,
        config.extras.base_quantization,
    );
    let Some(available) = available_memory(&device) else {
        return Ok(());
    };
    tracing::info!(
        needed = estimate.total(),
        available,
        "memory estimate for {tokens} tokens per pass"
    );
    check_fits(&estimate, available, &device_label(&device)).map_err(|e| e.to_string())
}

/// The LoRA configuration of a job.
pub fn lora_config(config: &SftConfig) -> LoraConfig {
    LoraConfig {
        rank: config.lora_rank as usize,
        alpha: f64::from(config.lora_alpha),
        target_modules: config.extras.lora_target_modules.clone(),
    }
}

fn examples(list: Vec<dn_render::Example>) -> Vec<TrainExample> {
    list.into_iter()
        .map(|e| TrainExample {
            input_ids: e.input_ids,
            loss_mask: e.loss_mask,
        })
        .collect()
}

/// Everything the training thread needs.
pub struct TrainRequest {
    pub device: DeviceSpec,
    pub model_path: PathBuf,
    pub model_name: String,
    pub inputs: PreparedInputs,
    pub checkpoint_dir: PathBuf,
    /// A checkpoint directory to resume from (a previous attempt's).
    pub resume: Option<PathBuf>,
}

/// How the runner steers the trainer at step boundaries.
#[derive(Clone, Default)]
pub struct TrainSignals {
    /// Stop (cancel, lost lease).
    pub stop: Arc<AtomicBool>,
    /// Checkpoint, then stop (preemption).
    pub suspend: Arc<AtomicBool>,
}

impl TrainSignals {
    fn control(&self) -> Control {
        if self.stop.load(Ordering::SeqCst) {
            Control::Stop
        } else if self.suspend.load(Ordering::SeqCst) {
            Control::Suspend
        } else {
            Control::Continue
        }
    }
}

/// Checks a `--device` value where a worker starts, so a misconfigured node fails at once instead of
/// failing every job it claims; returns the device it names (`cpu`, `cuda:0`, ...). `auto` on a node
/// whose GPU cannot be used is logged as a warning saying what is missing.
pub fn check_device(spec: DeviceSpec) -> Result<String, String> {
    let device = select_device(spec).map_err(|e| e.to_string())?;
    if let Some(warning) = dn_train::device_warning(spec) {
        tracing::warn!("{warning}");
    }
    Ok(device_label(&device))
}

fn train(
    request: TrainRequest,
    signals: &TrainSignals,
    tx: &UnboundedSender<TrainMessage>,
) -> dn_train::Result<TrainSummary> {
    let config = request.inputs.config.clone();
    let device = select_device(request.device)?;
    let base = BaseModel::load_with(
        &request.model_path,
        base_dtype(&device),
        &device,
        config.extras.base_quantization,
    )?;
    let lora = lora_config(&config);
    let mut options = train_options(&config);
    let samples = request.inputs.eval_samples;
    options.eval_prompts = samples.iter().map(|s| s.prompt_ids.clone()).collect();
    options.sampling = SamplingOptions::greedy(EVAL_SAMPLE_TOKENS, request.inputs.stop_ids.clone());
    let tokenizer = match samples.is_empty() {
        true => None,
        false => Some(dn_render::load_tokenizer(&request.model_path).map_err(|e| {
            dn_train::Error::model(request.model_path.display().to_string(), e.to_string())
        })?),
    };
    let model = LoraModel::new(&base, &lora, options.seed)?;
    drop(base);
    set_tokens_per_pass(&mut options, &config, &model);
    let (train, eval) = (
        examples(request.inputs.train),
        examples(request.inputs.eval),
    );
    let trainer = Trainer {
        model: &model,
        options,
        checkpoint_dir: request.checkpoint_dir,
        base_model_name: request.model_name,
    };
    let result = trainer.run(&train, &eval, request.resume.as_deref(), &mut |event| {
        match (event, &tokenizer) {
            // Progress inside generation: only the signals matter.
            (Event::Sampling { .. }, _) => {}
            (Event::EvalSamples { step, completions }, Some(tokenizer)) => {
                let data = samples_data(&samples, completions, tokenizer);
                let _ = tx.send(TrainMessage::Samples { step: *step, data });
            }
            _ => {
                let _ = tx.send(TrainMessage::Event(event.clone()));
            }
        }
        signals.control()
    });
    // The GPU memory the job used goes back to the driver with its model, not kept for the next job.
    drop(model);
    dn_train::release_cached_memory(&device);
    result
}

/// Tokens per pass: the job's `tokens_per_pass`; else on CUDA what the free memory holds once the
/// weights are loaded (shrunk by the trainer if a step still runs out); else the trainer's default.
fn set_tokens_per_pass(options: &mut TrainOptions, config: &SftConfig, model: &LoraModel) {
    if let Some(tokens) = config.extras.tokens_per_pass {
        options.tokens_per_pass = tokens as usize;
        return;
    }
    let device = model.device();
    if !device.is_cuda() {
        return;
    }
    let Some(free) = available_memory(device) else {
        return;
    };
    let recompute = options.recompute.unwrap_or(true);
    options.tokens_per_pass =
        tokens_per_pass_for_memory(&model.config, &model.lora, device, recompute, free);
    options.shrink_pass_on_oom = true;
}

/// New tokens of each eval sample at most.
pub const EVAL_SAMPLE_TOKENS: usize = 256;
/// Characters of a prompt or reference kept in the log.
const SAMPLE_TEXT_CHARS: usize = 4000;

fn clipped(text: &str) -> String {
    match text.char_indices().nth(SAMPLE_TEXT_CHARS) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text.to_owned(),
    }
}

/// The `eval_samples` event's data: per sample the prompt's last user message, the reference answer and
/// the generated one.
fn samples_data(
    samples: &[dn_render::EvalPrompt],
    completions: &[dn_train::Completion],
    tokenizer: &dn_render::Tokenizer,
) -> serde_json::Value {
    let list: Vec<serde_json::Value> = samples
        .iter()
        .zip(completions)
        .map(|(sample, completion)| {
            let generated = dn_render::decode(tokenizer, &completion.tokens)
                .unwrap_or_else(|e| format!("(cannot decode: {e})"));
            serde_json::json!({
                "prompt": clipped(&sample.prompt),
                "reference": clipped(&sample.reference),
                "generated": generated,
                "num_tokens": completion.tokens.len(),
                "finish_reason": completion.finish.name(),
            })
        })
        .collect();
    serde_json::json!({"event": "eval_samples", "samples": list})
}

/// Starts the training thread; its last message is always `Done` unless it panicked (then the channel
/// just closes, and the runner fails the job).
pub fn spawn_training(
    request: TrainRequest,
    signals: TrainSignals,
    tx: UnboundedSender<TrainMessage>,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("dn-train".into())
        .spawn(move || {
            let result = train(request, &signals, &tx);
            let _ = tx.send(TrainMessage::Done(result));
        })?;
    Ok(())
}
