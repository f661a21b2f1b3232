//! Training-step throughput on the test model (SmolLM2-135M-Instruct, f32 on the CPU), LoRA r16 on all
//! seven projections: the peer's best case (random ids, every token supervised, 4 x 256) and a packed
//! chat-like batch with assistant-only loss. Prints tokens/s, step times and peak RSS.
//! Run: cargo bench -p dn-train --bench train_step [-- STEPS]

use std::path::PathBuf;
use std::time::Instant;

use dn_train::{
    BaseModel, Control, DType, Device, LlamaLora, LoraConfig, TrainExample, TrainOptions, Trainer,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn model_path() -> PathBuf {
    std::env::var("DN_TEST_MODEL_GGUF")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../.cache/models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf")
        })
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// `count` sequences of `len` random ids; `prompt` leading tokens carry no loss.
fn batch(count: usize, len: usize, prompt: usize, seed: u64) -> Vec<TrainExample> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..count)
        .map(|_| TrainExample {
            input_ids: (0..len).map(|_| rng.random_range(20..49152)).collect(),
            loss_mask: (0..len).map(|i| u8::from(i >= prompt)).collect(),
        })
        .collect()
}

fn run(label: &str, model: &LlamaLora, examples: &[TrainExample], steps: u64) {
    let dir = tempfile::tempdir().unwrap();
    let trainer = Trainer {
        model,
        options: TrainOptions {
            batch_size: examples.len(),
            steps: Some(steps + 1),
            checkpoint_interval: 0,
            tokens_per_pass: 1 << 20,
            ..Default::default()
        },
        checkpoint_dir: dir.path().to_path_buf(),
        base_model_name: "bench".into(),
    };
    let started = Instant::now();
    let summary = trainer
        .run(examples, &[], None, &mut |_| Control::Continue)
        .unwrap();
    let wall = started.elapsed().as_secs_f64();
    // The first step warms allocations up; report the rest.
    let timed = &summary.history[1..];
    let mut seconds: Vec<f64> = timed.iter().map(|r| r.step_seconds).collect();
    seconds.sort_by(f64::total_cmp);
    let tokens: usize = timed.iter().map(|r| r.num_tokens).sum();
    let supervised: usize = timed.iter().map(|r| r.num_supervised_tokens).sum();
    let total: f64 = seconds.iter().sum();
    println!(
        "{label:<28} {:>8.1} tok/s {:>8.1} supervised tok/s   step median {:.2}s min {:.2}s max {:.2}s   loss {:.4}   peak RSS {:.0} MiB   ({wall:.0}s wall)",
        tokens as f64 / total,
        supervised as f64 / total,
        seconds[seconds.len() / 2],
        seconds[0],
        seconds[seconds.len() - 1],
        timed.last().unwrap().loss,
        peak_rss_mib(),
    );
}

fn main() {
    let steps: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(3);
    let path = model_path();
    if !path.is_file() {
        eprintln!(
            "skipping: {} not found (scripts/fetch-test-model.sh)",
            path.display()
        );
        return;
    }
    let base = BaseModel::load(&path, DType::F32, &Device::Cpu).unwrap();
    let model = LlamaLora::new(&base, &LoraConfig::new(16, 32.0), 0).unwrap();
    drop(base);
    println!(
        "SmolLM2-135M, LoRA r16 all projections, f32 CPU, {steps} timed step(s) after 1 warm-up"
    );
    run(
        "random 4x256, all supervised",
        &model,
        &batch(4, 256, 0, 1),
        steps,
    );
    run(
        "chat-like 8x160, 1/3 supervised",
        &model,
        &batch(8, 160, 107, 2),
        steps,
    );
}
