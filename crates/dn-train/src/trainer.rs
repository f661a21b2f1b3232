//! The training loop: steps over shuffled examples, gradient accumulation over micro-batches and
//! token-budget passes, one loss normaliser per optimizer step, clipping, AdamW, the schedule,
//! checkpoints, evaluation and progress events. Runs on the caller's thread (never an async runtime).

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Tensor;
use dn_spec::defaults;

use crate::checkpoint::{self, Checkpoint, StepRecord, TrainerState};
use crate::error::{Error, Result};
use crate::generate::{SamplingOptions, generate};
use crate::loss::{Sequence, count_targets, evaluate, forward_backward};
use crate::model::{BaseMemory, LoraModel, RouterLoad};
use crate::optim::{AdamW, AdamWConfig, Schedule, clip_grad_norm, scheduled_rate};
use crate::schedule::{passes, step_examples, step_position, total_steps};

/// A tokenized example: ids and the loss mask (1 = target).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrainExample {
    pub input_ids: Vec<u32>,
    pub loss_mask: Vec<u8>,
}

impl TrainExample {
    fn sequence(&self) -> Sequence<'_> {
        Sequence {
            input_ids: &self.input_ids,
            loss_mask: &self.loss_mask,
        }
    }
}

/// The fewest tokens per pass a step that ran out of memory is retried with.
pub const MIN_TOKENS_PER_PASS: usize = 256;

#[derive(Debug, Clone, PartialEq)]
pub struct TrainOptions {
    pub learning_rate: f64,
    pub batch_size: usize,
    pub gradient_accumulation_steps: usize,
    pub steps: Option<u64>,
    pub epochs: Option<u64>,
    /// Save a checkpoint every this many steps (0: only the final one).
    pub checkpoint_interval: u64,
    /// Evaluate every this many steps (0: only after training).
    pub eval_interval: u64,
    pub seed: u64,
    pub adam: AdamWConfig,
    /// Global gradient-norm clip (0: none).
    pub max_grad_norm: f64,
    pub schedule: Schedule,
    pub warmup_steps: u64,
    /// Most tokens packed into one forward/backward pass (a micro-batch is split to fit).
    pub tokens_per_pass: usize,
    /// `tokens_per_pass` was derived from the device's memory: a step that runs out of device memory
    /// is redone with half as many (down to [`MIN_TOKENS_PER_PASS`]) instead of failing the run.
    pub shrink_pass_on_oom: bool,
    /// Layer-by-layer recompute (gradient checkpointing); `None`: the model's default for its device.
    pub recompute: Option<bool>,
    /// Prompts completed after each periodic evaluation and after training ([`Event::EvalSamples`]).
    pub eval_prompts: Vec<Vec<u32>>,
    /// How they are completed.
    pub sampling: SamplingOptions,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            learning_rate: defaults::LEARNING_RATE,
            batch_size: defaults::BATCH_SIZE as usize,
            gradient_accumulation_steps: defaults::GRADIENT_ACCUMULATION_STEPS as usize,
            steps: None,
            epochs: None,
            checkpoint_interval: defaults::CHECKPOINT_INTERVAL.into(),
            eval_interval: 0,
            seed: 0,
            adam: AdamWConfig::default(),
            max_grad_norm: defaults::MAX_GRAD_NORM,
            schedule: Schedule::default(),
            warmup_steps: 0,
            tokens_per_pass: defaults::CPU_TOKENS_PER_PASS as usize,
            shrink_pass_on_oom: false,
            recompute: None,
            eval_prompts: Vec::new(),
            sampling: SamplingOptions::greedy(256, Vec::new()),
        }
    }
}

/// Progress, in the order it happens.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    TrainingStart {
        total_steps: u64,
        /// Optimizer steps per pass over the training examples (for the epochs completed so far).
        steps_per_epoch: u64,
        start_step: u64,
        examples: usize,
        eval_examples: usize,
        trainable_parameters: usize,
        /// The same per module group (`attention`, `mlp`, `experts`).
        trainable_by_group: Vec<(&'static str, usize)>,
        /// `cpu` or `cuda:N`.
        device: String,
        tokens_per_pass: usize,
        /// What the frozen base occupies (its quantized projections and dense weights).
        base_memory: BaseMemory,
    },
    /// A step ran out of device memory and is redone with passes of at most `tokens_per_pass` tokens.
    PassShrunk {
        step: u64,
        tokens_per_pass: usize,
        error: String,
    },
    StepComplete(StepRecord),
    CheckpointSaved {
        step: u64,
        name: String,
        path: PathBuf,
    },
    EvalComplete {
        step: u64,
        loss: f64,
        examples: usize,
        tokens: usize,
        /// How each sparse layer's router spread the eval tokens (empty for a dense model).
        router_load: Vec<RouterLoad>,
    },
    /// A token of the eval samples was generated (progress: lets the caller stop generation).
    Sampling {
        step: u64,
    },
    /// The completions of [`TrainOptions::eval_prompts`], in order.
    EvalSamples {
        step: u64,
        completions: Vec<crate::generate::Completion>,
    },
}

/// Whether to keep going after an event (when several events of one step answer, the strongest wins).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Control {
    Continue,
    /// Stop at this step boundary (cancel): the run ends with [`Error::Stopped`].
    Stop,
    /// Save a checkpoint at this step boundary unless one was just saved, then stop (preemption: the
    /// next attempt resumes from it). At the last step the run finishes instead.
    Suspend,
}

/// What a finished run produced.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainSummary {
    pub history: Vec<StepRecord>,
    pub eval_history: Vec<(u64, f64)>,
    /// Checkpoint names in order; the last is `final`.
    pub checkpoints: Vec<(String, PathBuf)>,
    pub final_eval: Option<(f64, usize)>,
    pub epochs_completed: f64,
}

pub struct Trainer<'a> {
    pub model: &'a LoraModel,
    pub options: TrainOptions,
    /// Where checkpoints go (`<dir>/step-000010`, ..., `<dir>/final`).
    pub checkpoint_dir: PathBuf,
    /// Written into `adapter_config.json` as `base_model_name_or_path`.
    pub base_model_name: String,
}

fn checkpoint_name(step: u64) -> String {
    format!("step-{step:06}")
}

impl Trainer<'_> {
    fn validate(&self, train: &[TrainExample]) -> Result<()> {
        let o = &self.options;
        if train.is_empty() {
            return Err(Error::invalid("dataset", "no training examples"));
        }
        if o.batch_size == 0 {
            return Err(Error::invalid("batch_size", "must be at least 1"));
        }
        if o.gradient_accumulation_steps == 0 {
            return Err(Error::invalid(
                "gradient_accumulation_steps",
                "must be at least 1",
            ));
        }
        if o.learning_rate.is_nan() || o.learning_rate <= 0.0 {
            return Err(Error::invalid("learning_rate", "must be positive"));
        }
        if o.steps == Some(0) || o.epochs == Some(0) {
            return Err(Error::invalid(
                "steps",
                "steps and epochs must be at least 1",
            ));
        }
        for (i, e) in train.iter().enumerate() {
            if e.input_ids.len() != e.loss_mask.len() {
                return Err(Error::invalid(
                    format!("example {i}"),
                    "input_ids and loss_mask differ in length",
                ));
            }
            if let Some(bad) = e
                .input_ids
                .iter()
                .find(|t| **t as usize >= self.model.config.vocab_size)
            {
                return Err(Error::invalid(
                    format!("example {i}"),
                    format!(
                        "token id {bad} is outside the model's vocabulary of {}",
                        self.model.config.vocab_size
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Trains from scratch or from `resume`, reporting each event to `observe`.
    pub fn run(
        &self,
        train: &[TrainExample],
        eval: &[TrainExample],
        resume: Option<&Path>,
        observe: &mut dyn FnMut(&Event) -> Control,
    ) -> Result<TrainSummary> {
        self.validate(train)?;
        let o = &self.options;
        let per_step = o.batch_size * o.gradient_accumulation_steps;
        let total = total_steps(train.len(), per_step, o.steps, o.epochs);
        if let Some(recompute) = o.recompute {
            self.model.set_recompute(recompute);
        }
        let params = self.model.trainable();
        let mut optimizer = AdamW::new(o.adam.clone(), &params)?;
        let mut state = TrainerState {
            format: 1,
            step: 0,
            total_steps: total,
            epoch: 0,
            data_position: 0,
            seed: o.seed,
            lora: self.model.lora.clone(),
            adam: o.adam.clone(),
            optimizer_updates: 0,
            history: Vec::new(),
            eval_history: Vec::new(),
        };
        let mut checkpoints = Vec::new();
        if let Some(dir) = resume {
            let ckpt = Checkpoint::load(dir, self.model.device())?;
            ckpt.restore(self.model, &mut optimizer)?;
            if ckpt.state.seed != o.seed {
                return Err(Error::invalid(
                    "resume",
                    "the checkpoint was trained with another seed",
                ));
            }
            state.step = ckpt.state.step;
            state.history = ckpt.state.history.clone();
            state.eval_history = ckpt.state.eval_history.clone();
            state.epoch = ckpt.state.epoch;
            state.data_position = ckpt.state.data_position;
            state.optimizer_updates = ckpt.state.optimizer_updates;
        }
        let trainable_parameters = params.iter().map(|p| p.as_tensor().elem_count()).sum();
        if observe(&Event::TrainingStart {
            total_steps: total,
            steps_per_epoch: crate::schedule::steps_per_epoch(train.len(), per_step),
            start_step: state.step,
            examples: train.len(),
            eval_examples: eval.len(),
            trainable_parameters,
            trainable_by_group: self.model.trainable_by_group(),
            device: crate::device::device_label(self.model.device()),
            tokens_per_pass: o.tokens_per_pass,
            base_memory: self.model.base_memory(),
        }) != Control::Continue
        {
            return Err(Error::Stopped { step: state.step });
        }

        if state.step == 0 && !eval.is_empty() {
            // The base model's eval loss, so the curve shows what training changed.
            let event = self.eval_event(0, eval, &mut state)?;
            if observe(&event) != Control::Continue {
                return Err(Error::Stopped { step: 0 });
            }
        }
        let mut pass_tokens = o.tokens_per_pass;
        while state.step < total {
            let record = match self.step(
                train,
                &params,
                &mut optimizer,
                state.step,
                total,
                pass_tokens,
            ) {
                Err(Error::OutOfMemory { message, .. })
                    if o.shrink_pass_on_oom && pass_tokens > MIN_TOKENS_PER_PASS =>
                {
                    pass_tokens = (pass_tokens / 2).max(MIN_TOKENS_PER_PASS);
                    // The failed pass's buffers, kept by the pool, back to the driver: the smaller
                    // pass maps what it needs afresh.
                    crate::device::release_cached_memory(self.model.device());
                    let event = Event::PassShrunk {
                        step: state.step + 1,
                        tokens_per_pass: pass_tokens,
                        error: message,
                    };
                    if observe(&event) != Control::Continue {
                        return Err(Error::Stopped { step: state.step });
                    }
                    continue;
                }
                other => other?,
            };
            state.step += 1;
            (state.epoch, state.data_position) = step_position(train.len(), per_step, state.step);
            state.optimizer_updates = optimizer.updates;
            state.history.push(record.clone());
            let mut control = observe(&Event::StepComplete(record));
            let last = state.step == total;
            if o.eval_interval > 0
                && state.step.is_multiple_of(o.eval_interval)
                && !last
                && !eval.is_empty()
            {
                let e = self.eval_event(state.step, eval, &mut state)?;
                control = control.max(observe(&e));
                if control == Control::Continue {
                    control = self.sample(state.step, observe)?;
                }
            }
            let interval =
                o.checkpoint_interval > 0 && state.step.is_multiple_of(o.checkpoint_interval);
            if !last && (interval || control == Control::Suspend) {
                let name = checkpoint_name(state.step);
                let path = self.save(&name, &optimizer, &state)?;
                checkpoints.push((name.clone(), path.clone()));
                control = control.max(observe(&Event::CheckpointSaved {
                    step: state.step,
                    name,
                    path,
                }));
            }
            if control != Control::Continue && !last {
                return Err(Error::Stopped { step: state.step });
            }
        }

        let final_eval = if eval.is_empty() {
            None
        } else {
            let event = self.eval_event(state.step, eval, &mut state)?;
            observe(&event);
            let Event::EvalComplete { loss, examples, .. } = event else {
                unreachable!("eval_event makes an EvalComplete")
            };
            Some((loss, examples))
        };
        let path = self.save("final", &optimizer, &state)?;
        checkpoints.push(("final".to_owned(), path.clone()));
        observe(&Event::CheckpointSaved {
            step: state.step,
            name: "final".into(),
            path,
        });
        // Training is done: a stop here only cuts the samples short.
        self.sample(state.step, observe)?;
        let spe = crate::schedule::steps_per_epoch(train.len(), per_step);
        Ok(TrainSummary {
            epochs_completed: state.step as f64 / spe as f64,
            history: state.history,
            eval_history: state.eval_history,
            checkpoints,
            final_eval,
        })
    }

    fn save(&self, name: &str, optimizer: &AdamW, state: &TrainerState) -> Result<PathBuf> {
        checkpoint::save(
            &self.checkpoint_dir.join(name),
            self.model,
            optimizer,
            state,
            &self.base_model_name,
        )
    }

    /// One optimizer step (0-based `step`).
    fn step(
        &self,
        train: &[TrainExample],
        params: &[&candle_core::Var],
        optimizer: &mut AdamW,
        step: u64,
        total: u64,
        tokens_per_pass: usize,
    ) -> Result<StepRecord> {
        let started = Instant::now();
        let o = &self.options;
        let per_step = o.batch_size * o.gradient_accumulation_steps;
        let (epoch, _, indices) = step_examples(train.len(), per_step, o.seed, step);
        let sequences: Vec<Sequence<'_>> = indices.iter().map(|i| train[*i].sequence()).collect();
        let normaliser = count_targets(&sequences);
        let mut grads: Vec<Option<Tensor>> = vec![None; params.len()];
        // Added up on the device: one read per step, with the gradient norm.
        let mut nll_sum = Tensor::zeros((), candle_core::DType::F64, self.model.device())?;
        let mut tokens = 0;
        for micro in indices.chunks(o.batch_size) {
            let lengths: Vec<(usize, usize)> = micro
                .iter()
                .map(|i| (*i, train[*i].input_ids.len()))
                .collect();
            for pass in passes(&lengths, tokens_per_pass) {
                let seqs: Vec<Sequence<'_>> = pass.iter().map(|i| train[*i].sequence()).collect();
                let (loss, store) = forward_backward(self.model, &seqs, normaliser.max(1))
                    .map_err(|e| e.out_of_memory(self.model.device(), tokens_per_pass))?;
                nll_sum = (nll_sum + loss.nll)?;
                tokens += loss.tokens;
                let Some(pass_grads) = store else { continue };
                for (slot, g) in grads.iter_mut().zip(pass_grads) {
                    *slot = Some(match slot.take() {
                        Some(acc) => (acc + g)?,
                        None => g,
                    });
                }
            }
        }
        let model_flops: f64 = sequences
            .iter()
            .map(|s| {
                let len = s.input_ids.len() as f64;
                len * self.model.config.training_flops_per_token(len)
            })
            .sum();
        let lr = scheduled_rate(o.schedule, o.learning_rate, step, total, o.warmup_steps);
        let mut grads: Vec<Tensor> = grads
            .into_iter()
            .zip(params)
            .map(|(g, p)| g.map_or_else(|| p.as_tensor().zeros_like(), Ok))
            .collect::<candle_core::Result<_>>()?;
        let grad_norm = clip_grad_norm(&mut grads, o.max_grad_norm)?;
        if normaliser > 0 {
            optimizer.step(params, &grads, lr)?;
        }
        let [nll_sum, grad_norm] = Tensor::stack(&[nll_sum, grad_norm], 0)?
            .to_vec1::<f64>()?
            .try_into()
            .map_err(|_| {
                Error::invalid("optimizer", "loss and norm read back as other than two")
            })?;
        Ok(StepRecord {
            step: step + 1,
            epoch,
            loss: if normaliser > 0 {
                nll_sum / normaliser as f64
            } else {
                0.0
            },
            learning_rate: lr,
            grad_norm,
            num_sequences: indices.len(),
            num_tokens: tokens,
            num_supervised_tokens: normaliser,
            step_seconds: started.elapsed().as_secs_f64(),
            model_flops,
            device_memory_used: crate::device::gpu_memory_used(self.model.device()),
        })
    }

    /// Mean NLL per supervised token over `eval` (same masking and normalisation as training).
    /// Completes the eval prompts (nothing without any); a stop answered to a token ends generation
    /// and is returned.
    fn sample(&self, step: u64, observe: &mut dyn FnMut(&Event) -> Control) -> Result<Control> {
        let prompts = &self.options.eval_prompts;
        if prompts.is_empty() {
            return Ok(Control::Continue);
        }
        let mut control = Control::Continue;
        let completions = generate(self.model, prompts, &self.options.sampling, &mut |_, _| {
            control = control.max(observe(&Event::Sampling { step }));
            control == Control::Continue
        })?;
        control = control.max(observe(&Event::EvalSamples { step, completions }));
        Ok(control)
    }

    /// Evaluates after `step`: the loss joins the state's eval history, the event carries the routers'
    /// load over the eval tokens alone.
    fn eval_event(
        &self,
        step: u64,
        eval: &[TrainExample],
        state: &mut TrainerState,
    ) -> Result<Event> {
        self.model.take_router_load();
        let (loss, examples, tokens) = self.evaluate(eval)?;
        state.eval_history.push((step, loss));
        Ok(Event::EvalComplete {
            step,
            loss,
            examples,
            tokens,
            router_load: self.model.take_router_load(),
        })
    }

    pub fn evaluate(&self, eval: &[TrainExample]) -> Result<(f64, usize, usize)> {
        let lengths: Vec<(usize, usize)> = eval
            .iter()
            .enumerate()
            .map(|(i, e)| (i, e.input_ids.len()))
            .collect();
        let mut nll = Tensor::zeros((), candle_core::DType::F64, self.model.device())?;
        let mut targets = 0;
        for pass in passes(&lengths, self.options.tokens_per_pass) {
            let seqs: Vec<Sequence<'_>> = pass.iter().map(|i| eval[*i].sequence()).collect();
            let loss = evaluate(self.model, &seqs)?;
            nll = (nll + loss.nll)?;
            targets += loss.targets;
        }
        let nll = nll.to_scalar::<f64>()?;
        Ok((
            if targets > 0 {
                nll / targets as f64
            } else {
                0.0
            },
            eval.len(),
            targets,
        ))
    }
}
