//! Every job option's default and bound, once. Left out of a request, an option takes the reference
//! worker's value (or, for dn's extensions, what leaves training as the reference's); [`Limits`] are the
//! maxima a deployment may lower or raise (`[limits]` in server.toml), the `MAX_*` constants are fixed.

use serde::Deserialize;

pub const MAX_SEQUENCE_LENGTH: u32 = 2048;
pub const BATCH_SIZE: u32 = 16;
pub const GRADIENT_ACCUMULATION_STEPS: u32 = 1;
pub const LEARNING_RATE: f64 = 1e-4;
pub const LORA_RANK: u32 = 16;
/// Save a checkpoint every this many steps.
pub const CHECKPOINT_INTERVAL: u32 = 10;
/// Global gradient-norm clip.
pub const MAX_GRAD_NORM: f64 = 1.0;
/// Eval conversations completed after each evaluation.
pub const EVAL_SAMPLES: u32 = 4;
/// Tokens in one forward/backward pass on the CPU (on CUDA, derived from the free memory).
pub const CPU_TOKENS_PER_PASS: u32 = 4096;
/// Conversations a dataset preview renders.
pub const PREVIEW_ROWS: u32 = 5;

/// `lora_alpha` when a job gives none: 2 x rank (the reference ignores alpha).
pub fn lora_alpha(rank: u32) -> u32 {
    2 * rank
}

pub const MAX_GRADIENT_ACCUMULATION_STEPS: u32 = 1 << 16;
pub const MAX_EPOCHS: u32 = 1_000_000;
pub const MAX_LORA_ALPHA: u32 = 1 << 16;
pub const MAX_CHECKPOINT_INTERVAL: u32 = 100_000_000;
pub const MAX_EVAL_SAMPLES: u32 = 64;
pub const MAX_TOKENS_PER_PASS: u32 = 1 << 20;
pub const MAX_SEED: u64 = u32::MAX as u64;
pub const MAX_WARMUP_STEPS: u32 = 100_000_000;
pub const MAX_EVAL_INTERVAL: u32 = 100_000_000;
pub const MAX_SAVE_TOTAL_LIMIT: u32 = 1_000_000;
pub const MAX_WEIGHT_DECAY: f64 = 1.0;
pub const MAX_GRAD_NORM_LIMIT: f64 = 1e6;
/// Conversations one preview may render.
pub const MAX_PREVIEW_ROWS: u32 = 20;
/// Tokens a preview renders per example.
pub const MAX_PREVIEW_TOKENS: u32 = 32_768;

/// Maxima of the options that size a job's memory and time (a deployment setting): well above what real
/// jobs use (Llama 3.1 reads 128k tokens; PEFT ranks stay under a few hundred), well below what takes a
/// node down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub lora_rank: u32,
    pub batch_size: u32,
    pub max_sequence_length: u32,
    pub steps: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            lora_rank: 512,
            batch_size: 4096,
            max_sequence_length: 131_072,
            steps: 1_000_000,
        }
    }
}
