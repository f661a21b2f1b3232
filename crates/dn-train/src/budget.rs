//! The memory a job needs, estimated from the model's config and the job's settings before any weights are
//! loaded or downloaded, against what the node has: a job that cannot fit is refused with the fields to
//! change instead of being killed for memory halfway through.
//!
//! The estimate counts the frozen weights in the dtype they are trained in (f32 on the CPU, bf16 on CUDA;
//! every expert of a mixture resident; projections kept quantized in their stored bytes),
//! the LoRA pairs with their gradients and AdamW moments (f32), and the activations one forward/backward
//! pass keeps for its tokens (what the CPU engine stores per block, or with layer-by-layer recompute the
//! block inputs plus one block), plus a 512-row chunk of logits and its gradient.

use candle_core::Device;
use dn_arch::ModelConfig;

use crate::error::{Error, Result};
use crate::lora::LoraConfig;
use dn_spec::BaseQuantization;

/// Rows of logits the loss computes at a time.
const LOGIT_ROWS: u64 = 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryEstimate {
    pub weights: u64,
    /// LoRA parameters, gradients and both AdamW moments.
    pub lora: u64,
    pub activations: u64,
}

impl MemoryEstimate {
    pub fn total(&self) -> u64 {
        self.weights + self.lora + self.activations
    }
}

/// What training `config` with `lora` (resolved) on `device` needs for passes of `tokens` tokens, the
/// base held as stored.
pub fn estimate_memory(
    config: &ModelConfig,
    lora: &LoraConfig,
    device: &Device,
    tokens: usize,
    recompute: bool,
) -> MemoryEstimate {
    estimate_memory_as(
        config,
        lora,
        device,
        tokens,
        recompute,
        BaseQuantization::AsStored,
    )
}

/// Bytes per projection weight of the base held as `quantization` says (`None`: the training dtype's).
fn projection_bytes(config: &ModelConfig, quantization: BaseQuantization) -> Option<f64> {
    match quantization {
        BaseQuantization::AsStored => config
            .quantization
            .and_then(|q| q.projection_bytes_per_weight()),
        BaseQuantization::None => None,
        BaseQuantization::Nf4 => Some(0.5 + 4.0 / 64.0),
        BaseQuantization::Q8_0 => Some(34.0 / 32.0),
    }
}

/// [`estimate_memory`] with the base held as `quantization` says: its projections counted in their
/// stored bytes when kept quantized.
pub fn estimate_memory_as(
    config: &ModelConfig,
    lora: &LoraConfig,
    device: &Device,
    tokens: usize,
    recompute: bool,
    quantization: BaseQuantization,
) -> MemoryEstimate {
    let weight_bytes = if device.is_cuda() { 2 } else { 4 };
    let projection_params: u64 = (0..config.num_hidden_layers)
        .flat_map(|i| config.layer_projections(i).iter())
        .map(|p| (config.in_features(p.role) * config.out_features(p.role)) as u64)
        .sum();
    // gpt-oss's MXFP4 experts stay so unless decoded: 17 bytes per 32 weights.
    let mxfp4_experts = config.quantization == Some(dn_arch::StoredQuantization::Mxfp4)
        && quantization != BaseQuantization::None;
    let expert_params: u64 = match config.experts {
        Some(e) if mxfp4_experts => {
            let per_layer = e.count as u64 * 3 * (config.hidden_size * e.intermediate_size) as u64;
            config.layers.iter().filter(|l| l.sparse).count() as u64 * per_layer
        }
        _ => 0,
    };
    let dense_params = config.parameter_count() - expert_params;
    let experts = (expert_params as f64 * 17.0 / 32.0) as u64;
    let weights = experts
        + match projection_bytes(config, quantization) {
            Some(bytes) => {
                (dense_params - projection_params) * weight_bytes
                    + (projection_params as f64 * bytes) as u64
            }
            None => dense_params * weight_bytes,
        };
    let rank = lora.rank as u64;
    // Per layer: its projections' pairs, and a sparse layer's router pair and pair per expert on gate_up
    // and down.
    let lora_params: u64 = (0..config.num_hidden_layers)
        .map(|i| {
            let projections: u64 = config
                .layer_projections(i)
                .iter()
                .filter(|p| lora.targets(p.name) && config.adaptable(p))
                .map(|p| rank * (config.in_features(p.role) + config.out_features(p.role)) as u64)
                .sum();
            let experts = match (config.layers[i].sparse, config.experts) {
                (true, Some(e)) => {
                    let (d, f) = (config.hidden_size as u64, e.intermediate_size as u64);
                    let gate_up = u64::from(lora.targets("gate_up_proj")) * (d + 2 * f);
                    let down = u64::from(lora.targets("down_proj")) * (f + d);
                    let router = config.router_target().is_some_and(|r| lora.targets(r));
                    let router = u64::from(router) * rank * (d + e.count as u64);
                    e.count as u64 * rank * (gate_up + down) + router
                }
                _ => 0,
            };
            projections + experts
        })
        .sum();
    let (d, q, kv, f) = (
        config.hidden_size as u64,
        config.q_width() as u64,
        config.kv_width() as u64,
        config.intermediate_size as u64,
    );
    // Per token and block: input, residual, attention output, q/k before and after their norm and rope,
    // v, gate and up, the sandwich norms' outputs, the LoRA `x A^T`; then the transient gradients. A
    // sparse block keeps, per expert a token is routed to, gate, up and the expert's output.
    let mlp_kept = match config.experts {
        Some(e) => (e.top_k as u64 * (2 * e.intermediate_size as u64 + d + 2 * rank)).max(2 * f),
        None => 2 * f,
    };
    let kept = 3 * d + 3 * q + 3 * kv + mlp_kept + 2 * d + rank * 7;
    let transient = 2 * (d + q + 2 * kv) + 2 * mlp_kept;
    let layers = config.num_hidden_layers as u64;
    let tokens = tokens as u64;
    let per_token = if recompute {
        layers * d + kept + transient
    } else {
        layers * kept + transient
    };
    let logits = LOGIT_ROWS.min(tokens.max(1)) * config.vocab_size as u64 * 2;
    MemoryEstimate {
        weights,
        lora: lora_params * 4 * 4,
        activations: (tokens * per_token + logits) * 4,
    }
}

/// The most tokens per pass allowed when derived from memory.
pub const MAX_DERIVED_TOKENS_PER_PASS: usize = 1 << 16;

/// Tokens per pass that fit in `free` bytes of device memory once the weights are loaded: the LoRA
/// state and the per-token activations of [`estimate_memory`] in 90% of it (the rest for the
/// allocator's fragmentation and library workspaces), rounded down to a multiple of 256, between
/// [`crate::MIN_TOKENS_PER_PASS`] and [`MAX_DERIVED_TOKENS_PER_PASS`].
pub fn tokens_per_pass_for_memory(
    config: &ModelConfig,
    lora: &LoraConfig,
    device: &Device,
    recompute: bool,
    free: u64,
) -> usize {
    let at = |tokens: usize| estimate_memory(config, lora, device, tokens, recompute);
    let (small, large) = (at(1024), at(2048));
    let per_token = (large.activations - small.activations) / 1024;
    let fixed = small.activations - 1024 * per_token + small.lora;
    let budget = (free / 10 * 9).saturating_sub(fixed);
    let tokens = (budget / per_token.max(1)) as usize / 256 * 256;
    tokens.clamp(crate::MIN_TOKENS_PER_PASS, MAX_DERIVED_TOKENS_PER_PASS)
}

/// Bytes of memory the device can still give: the GPU's free memory (with what dn's memory pool holds
/// unused), or the host's `MemAvailable`; `None` when it cannot be told.
pub fn available_memory(device: &Device) -> Option<u64> {
    if device.is_cuda() {
        return crate::device::cuda_free_memory(device);
    }
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}

/// `Err` naming what to change when `estimate` exceeds `available` bytes.
pub fn check_fits(estimate: &MemoryEstimate, available: u64, device: &str) -> Result<()> {
    if estimate.total() <= available {
        return Ok(());
    }
    Err(Error::invalid(
        "memory",
        format!(
            "this job needs about {} on {device} but {} is available: {} of base weights (a smaller \
             model), {} of LoRA state (lora_rank, lora_target_modules), {} of activations \
             (batch_size, max_sequence_length; gradient_checkpointing)",
            gib(estimate.total()),
            gib(available),
            gib(estimate.weights),
            gib(estimate.lora),
            gib(estimate.activations),
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn llama_8b() -> ModelConfig {
        let json = serde_json::json!({
            "model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336,
            "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
            "vocab_size": 128256, "max_position_embeddings": 131072, "tie_word_embeddings": false
        });
        ModelConfig::from_json(&json, "config.json").unwrap()
    }

    #[test]
    fn an_8b_model_needs_its_weights_and_more() {
        let config = llama_8b();
        let lora = LoraConfig::new(16, 32.0).resolve(&config).unwrap();
        let cpu = estimate_memory(&config, &lora, &Device::Cpu, 4096, false);
        // 8.03B parameters in f32; PEFT's 42M LoRA parameters at rank 16 on every projection.
        assert_eq!(cpu.weights, 8_030_261_248 * 4);
        assert_eq!(cpu.lora, 41_943_040 * 16);
        let recomputed = estimate_memory(&config, &lora, &Device::Cpu, 4096, true);
        assert!(recomputed.activations < cpu.activations / 4);
        let e = check_fits(&cpu, 16 << 30, "cpu").unwrap_err().to_string();
        assert!(
            e.starts_with("memory:") && e.contains("batch_size") && e.contains("lora_rank"),
            "{e}"
        );
        check_fits(&cpu, 1 << 40, "cpu").unwrap();
        assert!(available_memory(&Device::Cpu).is_some_and(|m| m > 0));
    }

    #[test]
    fn tokens_per_pass_follow_free_memory_and_fit_in_it() {
        let config = llama_8b();
        let lora = LoraConfig::new(16, 32.0).resolve(&config).unwrap();
        let fits = |free: u64| {
            let tokens = tokens_per_pass_for_memory(&config, &lora, &Device::Cpu, true, free);
            let e = estimate_memory(&config, &lora, &Device::Cpu, tokens, true);
            (tokens, e.lora + e.activations)
        };
        let (small, used) = fits(8 << 30);
        assert!(
            small % 256 == 0 && used <= 8 << 30,
            "{small} tokens need {used}"
        );
        let (large, used) = fits(40 << 30);
        assert!(
            large > 4 * small && used <= 40 << 30,
            "{large} tokens need {used}"
        );
        assert_eq!(fits(1 << 20).0, crate::MIN_TOKENS_PER_PASS);
        assert_eq!(fits(1 << 50).0, MAX_DERIVED_TOKENS_PER_PASS);
    }
}
