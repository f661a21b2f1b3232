//! Training speed of a Llama-3.1-8B-shaped model with a few random layers at its real width: step time
//! and peak memory at two layer counts, extrapolated linearly to the full 32 layers, with tokens/s and
//! the model-FLOPs utilisation (MFU) that gives.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use candle_core::{DType, Device};
use dn_train::{
    Control, Event, LoraConfig, LoraModel, Result, TrainOptions, Trainer, available_memory,
    tokens_per_pass_for_memory,
};
use serde_json::{Value, json};

use crate::random::{LLAMA_8B, Shape, examples};

/// The lowest free memory seen while it runs.
struct MemorySampler {
    stop: Arc<AtomicBool>,
    low: Arc<AtomicU64>,
    thread: std::thread::JoinHandle<()>,
}

impl MemorySampler {
    fn start(device: &Device) -> Self {
        let (stop, low) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicU64::new(u64::MAX)),
        );
        let (s, l, device) = (stop.clone(), low.clone(), device.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if let Some(free) = available_memory(&device) {
                    l.fetch_min(free, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        MemorySampler { stop, low, thread }
    }

    fn lowest_free(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
        self.low.load(Ordering::Relaxed)
    }
}

pub struct Settings {
    pub layers: Vec<usize>,
    pub seq: usize,
    pub batch: usize,
    pub steps: u64,
    /// The accelerator's dense bf16 peak, for MFU.
    pub peak_tflops: f64,
}

/// Model FLOPs of one token at `layers` layers, sequences of `seq`, half the tokens supervised: the
/// frozen projections' forward and input gradient (no weight gradient), causal attention forward and
/// backward, the LoRA pairs, and the output head on supervised rows. `with_recompute` adds the second
/// forward of each block (hardware FLOPs).
pub fn flops_per_token(
    s: &Shape,
    layers: usize,
    seq: usize,
    rank: usize,
    with_recompute: bool,
) -> f64 {
    let (d, f, v) = (s.hidden as f64, s.intermediate as f64, s.vocab as f64);
    let kv = (s.kv_heads * (s.hidden / s.heads)) as f64;
    let proj = d * (d + 2.0 * kv + d) + 3.0 * d * f;
    let lora_in_out = (d + d) + 2.0 * (d + kv) + (d + d) + 3.0 * (d + f);
    let attention_fwd = 2.0 * d * seq as f64; // q k^T and p v over seq / 2 keys on average
    let block_fwd = 2.0 * proj + attention_fwd + 2.0 * rank as f64 * lora_in_out;
    let block_bwd = 2.0 * proj + 2.0 * attention_fwd + 4.0 * rank as f64 * lora_in_out;
    let head = 0.5 * 4.0 * v * d;
    let recompute = if with_recompute { block_fwd } else { 0.0 };
    layers as f64 * (block_fwd + block_bwd + recompute) + head
}

fn one(cuda: &Device, layers: usize, set: &Settings) -> Result<Value> {
    let before = available_memory(cuda).unwrap_or(0);
    let base = LLAMA_8B.random(layers, DType::BF16, cuda)?;
    let model = LoraModel::new(&base, &LoraConfig::new(16, 32.0), 0)?;
    drop(base);
    let free = available_memory(cuda).unwrap_or(0);
    let tokens_per_pass = tokens_per_pass_for_memory(&model.config, &model.lora, cuda, true, free);
    let data = examples(
        set.batch * set.steps as usize,
        &[set.seq],
        LLAMA_8B.vocab,
        5,
    );
    let trainer = Trainer {
        model: &model,
        options: TrainOptions {
            batch_size: set.batch,
            steps: Some(set.steps),
            checkpoint_interval: 0,
            tokens_per_pass,
            shrink_pass_on_oom: true,
            ..Default::default()
        },
        checkpoint_dir: std::env::temp_dir().join(format!("dn-gpu-check-{layers}")),
        base_model_name: LLAMA_8B.name.into(),
    };
    let sampler = MemorySampler::start(cuda);
    let mut shrunk = Vec::new();
    let summary = trainer.run(&data, &[], None, &mut |event| {
        if let Event::PassShrunk {
            tokens_per_pass, ..
        } = event
        {
            shrunk.push(*tokens_per_pass);
        }
        Control::Continue
    })?;
    let lowest = sampler.lowest_free();
    let seconds: Vec<f64> = summary.history.iter().map(|r| r.step_seconds).collect();
    // The first step pays for cuBLAS' and the allocator's warm-up.
    let mut timed = seconds[1..].to_vec();
    timed.sort_by(f64::total_cmp);
    let step = timed[timed.len() / 2];
    Ok(json!({
        "layers": layers,
        "tokens_per_step": set.batch * set.seq,
        "tokens_per_pass": tokens_per_pass,
        "passes_shrunk_to": shrunk,
        "step_seconds": seconds,
        "median_step_seconds": step,
        "peak_bytes": before.saturating_sub(lowest),
        "losses": summary.history.iter().map(|r| r.loss).collect::<Vec<_>>(),
    }))
}

pub fn run(cuda: &Device, set: &Settings) -> Result<Value> {
    let mut runs = Vec::new();
    for &layers in &set.layers {
        runs.push(one(cuda, layers, set)?);
    }
    let field = |r: &Value, k: &str| r[k].as_f64().unwrap_or(f64::NAN);
    let (first, last) = (&runs[0], &runs[runs.len() - 1]);
    let (l1, l2) = (field(first, "layers"), field(last, "layers"));
    let extrapolate = |k: &str| {
        let per_layer = (field(last, k) - field(first, k)) / (l2 - l1);
        (
            field(first, k) - l1 * per_layer + LLAMA_8B.layers as f64 * per_layer,
            per_layer,
        )
    };
    let (step32, per_layer_seconds) = extrapolate("median_step_seconds");
    let (peak32, per_layer_bytes) = extrapolate("peak_bytes");
    let tokens = (set.batch * set.seq) as f64;
    let model_flops = flops_per_token(&LLAMA_8B, LLAMA_8B.layers, set.seq, 16, false) * tokens;
    let hardware_flops = flops_per_token(&LLAMA_8B, LLAMA_8B.layers, set.seq, 16, true) * tokens;
    let peak = set.peak_tflops * 1e12;
    Ok(json!({
        "ok": step32.is_finite() && step32 > 0.0,
        "model": LLAMA_8B.name,
        "lora": {"rank": 16, "alpha": 32, "targets": "all-linear"},
        "sequence_length": set.seq,
        "batch_size": set.batch,
        "runs": runs,
        "per_layer_step_seconds": per_layer_seconds,
        "per_layer_peak_bytes": per_layer_bytes,
        "extrapolated_32_layers": {
            "step_seconds": step32,
            "tokens_per_second": tokens / step32,
            "peak_gib": peak32 / (1u64 << 30) as f64,
            "model_tflop_per_step": model_flops / 1e12,
            "mfu": model_flops / step32 / peak,
            "hardware_flops_utilisation": hardware_flops / step32 / peak,
        },
        "peak_tflops_assumed": set.peak_tflops,
    }))
}
