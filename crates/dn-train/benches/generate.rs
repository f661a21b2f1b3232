//! Generation throughput on the test model (SmolLM2-135M-Instruct, its Q4_1 GGUF kept quantized, f32
//! compute on the CPU) with a LoRA adapter (r16 on all seven projections, unmerged): greedy, no stop, `NEW` new tokens after a 32-token prompt, at
//! batch 1 and batch 8. Prints new tokens/s (all sequences together) and the time to the first token.
//! Run: cargo bench -p dn-train --bench generate [-- NEW] (default 256); `DN_BASE_QUANTIZATION=none` decodes
//! the GGUF's Q4_1 at load (the default keeps it). The peer, transformers + PEFT
//! `generate` on the same shapes: scripts/bench/generate_peer.py.

use std::path::PathBuf;
use std::time::Instant;

use dn_train::{BaseModel, DType, Device, LoraConfig, LoraModel, SamplingOptions, generate};

/// The test model; a benchmark without it has nothing to measure.
fn model_path() -> PathBuf {
    dn_testkit::test_model().expect("the test model: run scripts/fetch-test-model.sh")
}

fn main() {
    let new: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(256);
    // DN_BASE_QUANTIZATION: as_stored (the default: the GGUF's Q4_1 kept) or none (decoded at load).
    let quantization = std::env::var("DN_BASE_QUANTIZATION")
        .map_or(dn_train::BaseQuantization::AsStored, |q| q.parse().unwrap());
    let base = BaseModel::load_with(&model_path(), DType::F32, &Device::Cpu, quantization)
        .expect("test model");
    let model = LoraModel::new(&base, &LoraConfig::new(16, 32.0), 0).unwrap();
    println!(
        "threads: {}, {new} new tokens per sequence, 32-token prompts",
        rayon::current_num_threads()
    );
    for batch in [1usize, 8] {
        let prompts: Vec<Vec<u32>> = (0..batch)
            .map(|b| (0..32).map(|i| (b as u32 * 131 + i * 17) % 49152).collect())
            .collect();
        let options = SamplingOptions::greedy(new, vec![]);
        let started = Instant::now();
        let mut first = None;
        let completions = generate(&model, &prompts, &options, &mut |_, _| {
            first.get_or_insert_with(|| started.elapsed());
            true
        })
        .unwrap();
        let seconds = started.elapsed().as_secs_f64();
        let tokens: usize = completions.iter().map(|c| c.tokens.len()).sum();
        println!(
            "batch {batch}: {tokens} tokens in {seconds:.2}s: {:.1} tokens/s, first token after {:.0} ms",
            tokens as f64 / seconds,
            first.unwrap().as_secs_f64() * 1e3
        );
    }
}
