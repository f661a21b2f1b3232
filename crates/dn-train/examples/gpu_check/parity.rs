//! CUDA bf16 against the CPU engine in f32 on the same random SmolLM2-shaped model and LoRA: loss and
//! every LoRA gradient, layer-by-layer recompute on and off, and greedy generation running on CUDA.

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use dn_train::{
    LoraConfig, LoraModel, Result, SamplingOptions, Sequence, count_targets, forward_backward,
    generate,
};
use serde_json::{Value, json};

use crate::random::{SMOLLM2, Shape, examples};

fn flat(t: &Tensor) -> Result<Vec<f64>> {
    Ok(t.to_device(&Device::Cpu)?
        .to_dtype(DType::F64)?
        .flatten_all()?
        .to_vec1()?)
}

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f64 = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| x * x).sum::<f64>().sqrt();
    dot / (na * nb).max(f64::MIN_POSITIVE)
}

/// Global cosine over all tensors, the smallest per-tensor one, and the share of tensors above 0.99.
fn compare(a: &[Tensor], b: &[Tensor]) -> Result<(f64, f64, f64)> {
    let (mut all_a, mut all_b, mut worst, mut good) = (Vec::new(), Vec::new(), 1.0f64, 0);
    for (x, y) in a.iter().zip(b) {
        let (x, y) = (flat(x)?, flat(y)?);
        let c = cosine(&x, &y);
        worst = worst.min(c);
        good += usize::from(c > 0.99);
        all_a.extend(x);
        all_b.extend(y);
    }
    Ok((cosine(&all_a, &all_b), worst, good as f64 / a.len() as f64))
}

fn loss_and_grads(model: &LoraModel, seqs: &[Sequence<'_>]) -> Result<(f64, Vec<Tensor>, f64)> {
    let n = count_targets(seqs);
    let started = Instant::now();
    let (loss, grads) = forward_backward(model, seqs, n)?;
    let loss = loss.nll_sum()? / n as f64;
    Ok((
        loss,
        grads.unwrap_or_default(),
        started.elapsed().as_secs_f64(),
    ))
}

pub fn run(cuda: &Device, layers: usize) -> Result<Value> {
    let lora = LoraConfig::new(16, 32.0);
    let cpu_base = SMOLLM2.random(layers, DType::F32, &Device::Cpu)?;
    let cpu = LoraModel::new(&cpu_base, &lora, 0)?;
    // B is zero at init, which would leave every A gradient zero: start from a random B.
    for pair in cpu.lora_pairs() {
        let dims = pair.b.as_tensor().dims().to_vec();
        pair.b
            .set(&Tensor::randn(0f32, 0.01, dims, &Device::Cpu)?)?;
    }
    let gpu_base = Shape::moved(&cpu_base, DType::BF16, cuda)?;
    drop(cpu_base);
    let gpu = LoraModel::new(&gpu_base, &lora, 0)?;
    drop(gpu_base);
    for (c, g) in cpu.trainable().into_iter().zip(gpu.trainable()) {
        g.set(
            &c.as_tensor()
                .to_device(cuda)?
                .to_dtype(g.as_tensor().dtype())?,
        )?;
    }
    let data = examples(4, &[512, 384, 300, 256], SMOLLM2.vocab, 1);
    let seqs: Vec<Sequence<'_>> = data
        .iter()
        .map(|e| Sequence {
            input_ids: &e.input_ids,
            loss_mask: &e.loss_mask,
        })
        .collect();
    let (cpu_loss, cpu_grads, cpu_seconds) = loss_and_grads(&cpu, &seqs)?;
    // Blocks of 128 query rows: the examples span several, as long sequences do.
    gpu.set_attention_block_rows(128);
    gpu.set_recompute(true);
    let (on_loss, on_grads, on_seconds) = loss_and_grads(&gpu, &seqs)?;
    gpu.set_recompute(false);
    let (off_loss, off_grads, off_seconds) = loss_and_grads(&gpu, &seqs)?;
    let (cos, worst, share) = compare(&on_grads, &cpu_grads)?;
    let (recompute_cos, recompute_worst, _) = compare(&on_grads, &off_grads)?;
    let loss_diff = (on_loss - cpu_loss).abs();
    let recompute_diff = (on_loss - off_loss).abs();
    let prompts = vec![
        data[0].input_ids[..64].to_vec(),
        data[1].input_ids[..32].to_vec(),
    ];
    let completions = generate(
        &gpu,
        &prompts,
        &SamplingOptions::greedy(16, Vec::new()),
        &mut |_, _| true,
    )?;
    let generated: Vec<usize> = completions.iter().map(|c| c.tokens.len()).collect();
    let ok = loss_diff < 2e-2
        && cos > 0.99
        && recompute_diff < 1e-3
        && recompute_cos > 0.9999
        && generated.iter().all(|n| *n == 16);
    Ok(json!({
        "ok": ok,
        "model": SMOLLM2.name,
        "layers": layers,
        "sequences": [512, 384, 300, 256],
        "cpu_f32_loss": cpu_loss,
        "cuda_bf16_loss": on_loss,
        "loss_abs_diff": loss_diff,
        "grad_cosine_global": cos,
        "grad_cosine_min_tensor": worst,
        "grad_tensors_above_0_99": share,
        "recompute_off_loss": off_loss,
        "recompute_loss_abs_diff": recompute_diff,
        "recompute_grad_cosine": recompute_cos,
        "recompute_grad_cosine_min_tensor": recompute_worst,
        "seconds": {"cpu_f32": cpu_seconds, "cuda_recompute": on_seconds, "cuda_no_recompute": off_seconds},
        "generated_tokens": generated,
        "criteria": "loss within 2e-2, gradient cosine > 0.99, recompute on = off (loss 1e-3, cosine 0.9999), 16 tokens generated per prompt",
    }))
}
