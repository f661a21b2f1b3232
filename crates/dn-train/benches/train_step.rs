//! Training-step throughput on the test model (SmolLM2-135M-Instruct: its Q4_1 GGUF kept quantized, f32
//! compute on the CPU), LoRA r16 on all seven projections: the peer's best case (random ids, every token supervised, 4 x 256) and a packed
//! chat-like batch with assistant-only loss. Prints tokens/s, step times and peak RSS.
//! Run: cargo bench -p dn-train --bench train_step [-- STEPS]
//! Memory against tokens, recompute off and on: `cargo bench -p dn-train --bench train_step -- --memory`
//! Every family on its tiny model (tests/fixtures/families, same shapes): `... -- --families`
//! Harness mode (scripts/bench/compare.sh, moe_compare.sh): `train_step [--model DIR] --examples FILE.jsonl
//! --batch B --lr LR --out OUT.json` trains one epoch on pre-tokenized examples (`{input_ids, loss_mask}` per
//! line) with LoRA r16 on every projection (and expert), and writes the figures.

use std::path::PathBuf;
use std::time::Instant;

use dn_train::{
    BaseModel, Control, DType, Device, LoraConfig, LoraModel, TrainExample, TrainOptions, Trainer,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The test model; a benchmark without it has nothing to measure.
fn model_path() -> PathBuf {
    dn_testkit::test_model().expect("the test model: run scripts/fetch-test-model.sh")
}

fn peak_rss_mib() -> f64 {
    rss_mib("VmHWM:")
}

/// `count` sequences of `len` random ids; `prompt` leading tokens carry no loss.
fn batch(count: usize, len: usize, prompt: usize, seed: u64) -> Vec<TrainExample> {
    batch_in(count, len, prompt, seed, 49152)
}

fn batch_in(count: usize, len: usize, prompt: usize, seed: u64, vocab: u32) -> Vec<TrainExample> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..count)
        .map(|_| TrainExample {
            input_ids: (0..len).map(|_| rng.random_range(20..vocab)).collect(),
            loss_mask: (0..len).map(|i| u8::from(i >= prompt)).collect(),
        })
        .collect()
}

fn run(label: &str, model: &LoraModel, examples: &[TrainExample], steps: u64, recompute: bool) {
    let dir = tempfile::tempdir().unwrap();
    let trainer = Trainer {
        model,
        options: TrainOptions {
            batch_size: examples.len(),
            steps: Some(steps + 1),
            checkpoint_interval: 0,
            tokens_per_pass: 1 << 20,
            recompute: Some(recompute),
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

fn rss_mib(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// One optimizer step over `tokens` tokens (examples of 512, one pass) in this process; prints the
/// resident memory before it and the peak during it (the peak is reset first, so loading does not count).
fn memory_point(model: &LoraModel, tokens: usize, recompute: bool) {
    let examples = batch(tokens / 512, 512, 0, 3);
    let dir = tempfile::tempdir().unwrap();
    let trainer = Trainer {
        model,
        options: TrainOptions {
            batch_size: examples.len(),
            steps: Some(1),
            checkpoint_interval: 0,
            tokens_per_pass: tokens,
            recompute: Some(recompute),
            ..Default::default()
        },
        checkpoint_dir: dir.path().to_path_buf(),
        base_model_name: "bench".into(),
    };
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let before = rss_mib("VmRSS:");
    trainer
        .run(&examples, &[], None, &mut |_| Control::Continue)
        .unwrap();
    println!("{before:.0} {:.0}", rss_mib("VmHWM:"));
}

/// Peak memory of one optimizer step against its token count, with and without recompute, each point in
/// a fresh process: the step's own memory is the peak minus the resident size before it.
fn memory_table() {
    let exe = std::env::current_exe().unwrap();
    println!("one optimizer step, examples of 512 tokens in one pass; MiB above the loaded model");
    println!(
        "{:>8} {:>14} {:>14}",
        "tokens", "recompute off", "recompute on"
    );
    for tokens in [512, 1024, 2048, 4096, 8192] {
        let mut row = format!("{tokens:>8}");
        for recompute in [false, true] {
            let out = std::process::Command::new(&exe)
                .args([
                    "--memory-point",
                    &tokens.to_string(),
                    &recompute.to_string(),
                ])
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            let fields: Vec<f64> = text
                .split_whitespace()
                .filter_map(|v| v.parse().ok())
                .collect();
            let step = fields
                .get(1)
                .zip(fields.first())
                .map_or(f64::NAN, |(p, b)| p - b);
            row.push_str(&format!(" {step:>14.0}"));
        }
        println!("{row}");
    }
}

fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// One epoch over a file of examples, figures as JSON (the harness compares them with the peer's).
fn harness(model: &LoraModel, args: &[String]) {
    let file = flag(args, "--examples").unwrap();
    let batch: usize = flag(args, "--batch").map_or(8, |v| v.parse().unwrap());
    let lr: f64 = flag(args, "--lr").map_or(1e-4, |v| v.parse().unwrap());
    let examples: Vec<TrainExample> = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            TrainExample {
                input_ids: serde_json::from_value(v["input_ids"].clone()).unwrap(),
                loss_mask: serde_json::from_value(v["loss_mask"].clone()).unwrap(),
            }
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let trainer = Trainer {
        model,
        options: TrainOptions {
            batch_size: batch,
            learning_rate: lr,
            checkpoint_interval: 0,
            ..Default::default()
        },
        checkpoint_dir: dir.path().to_path_buf(),
        base_model_name: "bench".into(),
    };
    let summary = trainer
        .run(&examples, &[], None, &mut |_| Control::Continue)
        .unwrap();
    let h = &summary.history;
    let result = serde_json::json!({
        "system": format!("dn (CPU engine, f32; base {})", flag(args, "--base-quantization").unwrap_or("as_stored".into())),
        "steps": h.len(),
        "examples": examples.len(),
        "tokens": h.iter().map(|r| r.num_tokens).sum::<usize>(),
        "supervised_tokens": h.iter().map(|r| r.num_supervised_tokens).sum::<usize>(),
        "seconds": h.iter().map(|r| r.step_seconds).sum::<f64>(),
        "step_seconds": h.iter().map(|r| r.step_seconds).collect::<Vec<_>>(),
        "last_loss": h.last().map(|r| r.loss),
        "peak_rss_mib": peak_rss_mib(),
    });
    let out = flag(args, "--out").unwrap();
    std::fs::write(&out, result.to_string()).unwrap();
    println!("{result}");
}

/// Each family's tiny model (hidden 32, 3 layers, 4/2 heads) trained on the same random batch: what each
/// family's features cost the CPU engine relative to Llama.
fn families_table(steps: u64) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/families");
    println!(
        "tiny family models (tests/fixtures/families), LoRA r4 all projections, f32 CPU, 16x128 random ids"
    );
    for family in [
        "llama",
        "mistral",
        "qwen2",
        "qwen3",
        "gemma2",
        "gemma3",
        "phi3",
        "qwen3_moe",
        "qwen2_moe",
        "gpt_oss",
        "mixtral",
    ] {
        let base =
            BaseModel::load(&root.join(family).join("model"), DType::F32, &Device::Cpu).unwrap();
        let vocab = base.config.vocab_size as u32;
        let model = LoraModel::new(&base, &LoraConfig::new(4, 8.0), 0).unwrap();
        run(
            family,
            &model,
            &batch_in(16, 128, 32, 5, vocab),
            steps,
            false,
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--families") {
        return families_table(20);
    }
    if args.iter().any(|a| a == "--memory") {
        return memory_table();
    }
    if let Some(tokens) = flag(&args, "--memory-point") {
        let recompute = args.last().is_some_and(|a| a == "true");
        let base = BaseModel::load(&model_path(), DType::F32, &Device::Cpu).unwrap();
        let model = LoraModel::new(&base, &LoraConfig::new(16, 32.0), 0).unwrap();
        drop(base);
        return memory_point(&model, tokens.parse().unwrap(), recompute);
    }
    if args.iter().any(|a| a == "--examples") {
        let path = flag(&args, "--model").map_or_else(model_path, PathBuf::from);
        let quantization = flag(&args, "--base-quantization")
            .map_or(dn_train::BaseQuantization::AsStored, |q| q.parse().unwrap());
        let base = BaseModel::load_with(&path, DType::F32, &Device::Cpu, quantization).unwrap();
        let model = LoraModel::new(&base, &LoraConfig::new(16, 32.0), 0).unwrap();
        drop(base);
        return harness(&model, &args);
    }
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
    let model = LoraModel::new(&base, &LoraConfig::new(16, 32.0), 0).unwrap();
    drop(base);
    println!(
        "SmolLM2-135M, LoRA r16 all projections, f32 CPU, {steps} timed step(s) after 1 warm-up"
    );
    run(
        "random 4x256, all supervised",
        &model,
        &batch(4, 256, 0, 1),
        steps,
        false,
    );
    run(
        "chat-like 8x160, 1/3 supervised",
        &model,
        &batch(8, 160, 107, 2),
        steps,
        false,
    );
    run(
        "random 4x256, recompute",
        &model,
        &batch(4, 256, 0, 1),
        steps,
        true,
    );
}
