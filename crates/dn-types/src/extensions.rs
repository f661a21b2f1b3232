//! dn's training options beyond the reference's config: seed, learning-rate schedule and warmup, periodic
//! evaluation, LoRA target modules, gradient clipping, weight decay, recompute and checkpoint retention.
//! All optional on the wire (the reference SDK never sends them); left out, training behaves as the
//! reference worker does.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::job::TinkerSftJobConfig;

/// PEFT's name for every linear projection of the blocks, whatever the family calls them (the default).
pub const ALL_LINEAR: &str = "all-linear";

/// What `lora_target_modules` may name: `all-linear`, or projections in PEFT's short names (each family
/// has some of them: q/k/v/o/gate/up/down, or Phi-3's fused qkv_proj and gate_up_proj; the worker refuses
/// a name the job's model does not have).
pub fn lora_target_names() -> Vec<&'static str> {
    std::iter::once(ALL_LINEAR)
        .chain(dn_arch::ALL_PROJECTION_NAMES)
        .collect()
}

pub const LR_SCHEDULERS: [&str; 3] = ["constant", "linear", "cosine"];

/// What the loss may cover (`train_on`): every assistant message, each conversation's last, or every token.
pub const TRAIN_ON: [&str; 3] = ["assistant", "last_assistant", "all"];

fn assistant() -> String {
    TRAIN_ON[0].into()
}

fn constant() -> String {
    "constant".into()
}

fn all_targets() -> Vec<String> {
    vec![ALL_LINEAR.to_owned()]
}

fn one() -> f64 {
    1.0
}

/// The effective values, stored flat in the job's config next to the reference's fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingExtras {
    /// LoRA init and every epoch's shuffle derive from it.
    #[serde(default)]
    pub seed: u64,
    /// constant (the reference's), linear or cosine decay to 0 at the last step.
    #[serde(default = "constant")]
    pub lr_scheduler: String,
    /// Linear warmup from 0 over this many optimizer steps.
    #[serde(default)]
    pub warmup_steps: u32,
    /// Evaluate every this many steps (0: before and after training only).
    #[serde(default)]
    pub eval_interval: u32,
    #[serde(default = "all_targets")]
    pub lora_target_modules: Vec<String>,
    /// Global gradient-norm clip (0: none).
    #[serde(default = "one")]
    pub max_grad_norm: f64,
    #[serde(default)]
    pub weight_decay: f64,
    /// Layer-by-layer recompute; absent: the worker's device decides (on for CUDA, off on the CPU).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gradient_checkpointing: Option<bool>,
    /// Step checkpoints kept in storage, newest first (absent: all); `final` is always kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub save_total_limit: Option<u32>,
    /// One of [`TRAIN_ON`].
    #[serde(default = "assistant")]
    pub train_on: String,
    /// Eval conversations completed (greedy, cut before their last assistant turn) after each periodic
    /// evaluation and after training, logged as an `eval_samples` event; 0: none.
    #[serde(default = "four")]
    pub eval_samples: u32,
    /// Most tokens in one forward/backward pass; absent: the worker derives it from the device's memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_pass: Option<u32>,
}

/// The most tokens a job may put in one pass.
pub const MAX_TOKENS_PER_PASS: i64 = 1 << 20;

fn four() -> u32 {
    DEFAULT_EVAL_SAMPLES
}

/// Eval samples generated unless a job says otherwise.
pub const DEFAULT_EVAL_SAMPLES: u32 = 4;
/// The most eval samples a job may ask for.
pub const MAX_EVAL_SAMPLES: i64 = 64;

impl Default for TrainingExtras {
    fn default() -> Self {
        TrainingExtras {
            seed: 0,
            lr_scheduler: constant(),
            warmup_steps: 0,
            eval_interval: 0,
            lora_target_modules: all_targets(),
            max_grad_norm: 1.0,
            weight_decay: 0.0,
            gradient_checkpointing: None,
            save_total_limit: None,
            train_on: assistant(),
            eval_samples: DEFAULT_EVAL_SAMPLES,
            tokens_per_pass: None,
        }
    }
}

fn non_negative_int(value: Option<i64>, field: &str, max: i64) -> Result<Option<i64>> {
    match value {
        Some(v) if v < 0 || v > max => Err(Error::invalid(
            field,
            format!("must be between 0 and {max} (got {v})"),
        )),
        other => Ok(other),
    }
}

fn float_in(value: Option<f64>, field: &str, max: f64) -> Result<Option<f64>> {
    match value {
        Some(v) if !(v.is_finite() && (0.0..=max).contains(&v)) => Err(Error::invalid(
            field,
            format!("must be between 0 and {max} (got {v})"),
        )),
        other => Ok(other),
    }
}

/// Checks the optional fields and fills in defaults.
pub fn validate_extras(c: &TinkerSftJobConfig) -> Result<TrainingExtras> {
    let defaults = TrainingExtras::default();
    let lr_scheduler = match &c.lr_scheduler {
        None => defaults.lr_scheduler,
        Some(s) if LR_SCHEDULERS.contains(&s.as_str()) => s.clone(),
        Some(s) => {
            return Err(Error::invalid(
                "config.lr_scheduler",
                format!(
                    "unknown schedule {s:?} (one of {})",
                    LR_SCHEDULERS.join(", ")
                ),
            ));
        }
    };
    let lora_target_modules = match &c.lora_target_modules {
        None => defaults.lora_target_modules,
        Some(list) if list.is_empty() => {
            return Err(Error::invalid(
                "config.lora_target_modules",
                "must name at least one module",
            ));
        }
        Some(list) => {
            let names = lora_target_names();
            let mut seen = Vec::new();
            for (i, m) in list.iter().enumerate() {
                if !names.contains(&m.as_str()) {
                    return Err(Error::invalid(
                        format!("config.lora_target_modules[{i}]"),
                        format!("unknown module {m:?} (one of {})", names.join(", ")),
                    ));
                }
                if !seen.contains(m) {
                    seen.push(m.clone());
                }
            }
            if seen.iter().any(|m| m == ALL_LINEAR) {
                all_targets()
            } else {
                seen
            }
        }
    };
    let train_on = match &c.train_on {
        None => assistant(),
        Some(s) if TRAIN_ON.contains(&s.as_str()) => s.clone(),
        Some(s) => {
            return Err(Error::invalid(
                "config.train_on",
                format!("unknown value {s:?} (one of {})", TRAIN_ON.join(", ")),
            ));
        }
    };
    Ok(TrainingExtras {
        train_on,
        eval_samples: non_negative_int(c.eval_samples, "config.eval_samples", MAX_EVAL_SAMPLES)?
            .map_or(DEFAULT_EVAL_SAMPLES, |v| v as u32),
        seed: non_negative_int(c.seed, "config.seed", u32::MAX as i64)?.map_or(0, |v| v as u64),
        tokens_per_pass: match c.tokens_per_pass {
            Some(n) if !(1..=MAX_TOKENS_PER_PASS).contains(&n) => {
                return Err(Error::invalid(
                    "config.tokens_per_pass",
                    format!("must be between 1 and {MAX_TOKENS_PER_PASS} (got {n})"),
                ));
            }
            other => other.map(|n| n as u32),
        },
        lr_scheduler,
        warmup_steps: non_negative_int(c.warmup_steps, "config.warmup_steps", 100_000_000)?
            .map_or(0, |v| v as u32),
        eval_interval: non_negative_int(c.eval_interval, "config.eval_interval", 100_000_000)?
            .map_or(0, |v| v as u32),
        lora_target_modules,
        max_grad_norm: float_in(c.max_grad_norm, "config.max_grad_norm", 1e6)?
            .unwrap_or(defaults.max_grad_norm),
        weight_decay: float_in(c.weight_decay, "config.weight_decay", 1.0)?
            .unwrap_or(defaults.weight_decay),
        gradient_checkpointing: c.gradient_checkpointing,
        save_total_limit: match c.save_total_limit {
            Some(n) if !(1..=1_000_000).contains(&n) => {
                return Err(Error::invalid(
                    "config.save_total_limit",
                    format!("must be between 1 and 1000000 (got {n})"),
                ));
            }
            other => other.map(|n| n as u32),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_reference_behaviour() {
        let extras = validate_extras(&TinkerSftJobConfig::default()).unwrap();
        assert_eq!(extras, TrainingExtras::default());
        assert_eq!(extras.lora_target_modules, ["all-linear"]);
    }

    #[test]
    fn bad_values_name_their_field() {
        let mut c = TinkerSftJobConfig {
            lr_scheduler: Some("step".into()),
            ..Default::default()
        };
        let e = validate_extras(&c).unwrap_err().to_string();
        assert!(
            e.contains("config.lr_scheduler") && e.contains("step"),
            "{e}"
        );
        c.lr_scheduler = None;
        c.lora_target_modules = Some(vec!["q_proj".into(), "lm_head".into()]);
        let e = validate_extras(&c).unwrap_err().to_string();
        assert!(e.contains("config.lora_target_modules[1]"), "{e}");
        c.lora_target_modules = Some(vec!["v_proj".into(), "q_proj".into(), "v_proj".into()]);
        assert_eq!(
            validate_extras(&c).unwrap().lora_target_modules,
            ["v_proj", "q_proj"]
        );
        c.lora_target_modules = Some(vec!["qkv_proj".into(), "all-linear".into()]);
        assert_eq!(
            validate_extras(&c).unwrap().lora_target_modules,
            ["all-linear"]
        );
        c.save_total_limit = Some(0);
        let e = validate_extras(&c).unwrap_err().to_string();
        assert!(e.contains("config.save_total_limit"), "{e}");
        c.save_total_limit = Some(2);
        assert_eq!(validate_extras(&c).unwrap().save_total_limit, Some(2));
        c.train_on = Some("prompt".into());
        let e = validate_extras(&c).unwrap_err().to_string();
        assert!(
            e.contains("config.train_on") && e.contains("last_assistant"),
            "{e}"
        );
        c.train_on = Some("last_assistant".into());
        assert_eq!(validate_extras(&c).unwrap().train_on, "last_assistant");
        c.tokens_per_pass = Some(0);
        let e = validate_extras(&c).unwrap_err().to_string();
        assert!(e.contains("config.tokens_per_pass"), "{e}");
        c.tokens_per_pass = Some(8192);
        assert_eq!(validate_extras(&c).unwrap().tokens_per_pass, Some(8192));
        c.weight_decay = Some(-0.1);
        assert!(
            validate_extras(&c)
                .unwrap_err()
                .to_string()
                .contains("config.weight_decay")
        );
    }
}
