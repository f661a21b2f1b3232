//! dn's training options beyond the reference's config: seed, learning-rate schedule and warmup, periodic
//! evaluation, LoRA target modules, gradient clipping, weight decay, recompute and checkpoint retention.
//! All optional on the wire (the reference SDK never sends them); left out, training behaves as the
//! reference worker does. Typed here (dn-spec's vocabulary): nothing below parses them again.

use dn_spec::defaults;
use dn_spec::{BaseQuantization, LoraTargets, LrSchedule, Tracker, TrainOn};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::job::TinkerSftJobConfig;

fn max_grad_norm() -> f64 {
    defaults::MAX_GRAD_NORM
}

fn eval_samples() -> u32 {
    defaults::EVAL_SAMPLES
}

/// The effective values, stored flat in the job's config next to the reference's fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingExtras {
    /// LoRA init and every epoch's shuffle derive from it.
    #[serde(default)]
    pub seed: u64,
    #[serde(default)]
    pub lr_scheduler: LrSchedule,
    /// Linear warmup from 0 over this many optimizer steps.
    #[serde(default)]
    pub warmup_steps: u32,
    /// Evaluate every this many steps (0: before and after training only).
    #[serde(default)]
    pub eval_interval: u32,
    #[serde(default)]
    pub lora_target_modules: LoraTargets,
    /// Global gradient-norm clip (0: none).
    #[serde(default = "max_grad_norm")]
    pub max_grad_norm: f64,
    #[serde(default)]
    pub weight_decay: f64,
    /// Layer-by-layer recompute; absent: the worker's device decides (on for CUDA, off on the CPU).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gradient_checkpointing: Option<bool>,
    /// Step checkpoints kept in storage, newest first (absent: all); `final` is always kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub save_total_limit: Option<u32>,
    #[serde(default)]
    pub train_on: TrainOn,
    /// Eval conversations completed (greedy, cut before their last assistant turn) after each periodic
    /// evaluation and after training, logged as an `eval_samples` event; 0: none.
    #[serde(default = "eval_samples")]
    pub eval_samples: u32,
    /// Most tokens in one forward/backward pass; absent: the worker derives it from the device's memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_pass: Option<u32>,
    /// How the frozen base is held in memory.
    #[serde(default)]
    pub base_quantization: BaseQuantization,
    /// Experiment trackers the job reports to (empty: none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub report_to: Vec<Tracker>,
}

impl Default for TrainingExtras {
    fn default() -> Self {
        TrainingExtras {
            seed: 0,
            lr_scheduler: LrSchedule::default(),
            warmup_steps: 0,
            eval_interval: 0,
            lora_target_modules: LoraTargets::default(),
            max_grad_norm: defaults::MAX_GRAD_NORM,
            weight_decay: 0.0,
            gradient_checkpointing: None,
            save_total_limit: None,
            train_on: TrainOn::default(),
            eval_samples: defaults::EVAL_SAMPLES,
            tokens_per_pass: None,
            base_quantization: BaseQuantization::default(),
            report_to: Vec::new(),
        }
    }
}

/// `report_to`'s trackers, each once; `none` stands for no tracker.
fn report_to(values: Option<&[String]>) -> Result<Vec<Tracker>> {
    let mut trackers = Vec::new();
    for value in values.unwrap_or_default() {
        if value == "none" {
            continue;
        }
        let tracker = Tracker::parse(value).map_err(|e| spec_error(e, "config."))?;
        if !trackers.contains(&tracker) {
            trackers.push(tracker);
        }
    }
    Ok(trackers)
}

/// `value` within `min..=max`, as a u32 (an error names `field`).
fn in_range(value: Option<i64>, field: &str, min: i64, max: i64) -> Result<Option<u32>> {
    match value {
        Some(v) if !(min..=max).contains(&v) => Err(Error::invalid(
            field,
            format!("must be between {min} and {max} (got {v})"),
        )),
        other => Ok(other.map(|v| v as u32)),
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

/// A typed option from its wire value (`None`: the default); an error names `<prefix><option>`.
pub(crate) fn parsed<I: ?Sized, T: Default>(
    value: Option<&I>,
    parse: impl Fn(&I) -> dn_spec::Result<T>,
    prefix: &str,
) -> Result<T> {
    value
        .map(parse)
        .transpose()
        .map(Option::unwrap_or_default)
        .map_err(|e| spec_error(e, prefix))
}

/// dn-spec's error as this crate's, its field under `prefix`.
pub(crate) fn spec_error(e: dn_spec::Error, prefix: &str) -> Error {
    let e = e.within(prefix);
    Error::invalid(e.field, e.message)
}

/// Checks the optional fields and fills in defaults.
pub fn validate_extras(c: &TinkerSftJobConfig) -> Result<TrainingExtras> {
    let max = |n: u32| i64::from(n);
    Ok(TrainingExtras {
        lr_scheduler: parsed(c.lr_scheduler.as_deref(), LrSchedule::parse, "config.")?,
        train_on: parsed(c.train_on.as_deref(), TrainOn::parse, "config.")?,
        lora_target_modules: parsed(
            c.lora_target_modules.as_deref(),
            LoraTargets::parse::<String>,
            "config.",
        )?,
        eval_samples: in_range(
            c.eval_samples,
            "config.eval_samples",
            0,
            max(defaults::MAX_EVAL_SAMPLES),
        )?
        .unwrap_or(defaults::EVAL_SAMPLES),
        seed: in_range(c.seed, "config.seed", 0, defaults::MAX_SEED as i64)?.map_or(0, u64::from),
        tokens_per_pass: in_range(
            c.tokens_per_pass,
            "config.tokens_per_pass",
            1,
            max(defaults::MAX_TOKENS_PER_PASS),
        )?,
        warmup_steps: in_range(
            c.warmup_steps,
            "config.warmup_steps",
            0,
            max(defaults::MAX_WARMUP_STEPS),
        )?
        .unwrap_or(0),
        eval_interval: in_range(
            c.eval_interval,
            "config.eval_interval",
            0,
            max(defaults::MAX_EVAL_INTERVAL),
        )?
        .unwrap_or(0),
        max_grad_norm: float_in(
            c.max_grad_norm,
            "config.max_grad_norm",
            defaults::MAX_GRAD_NORM_LIMIT,
        )?
        .unwrap_or(defaults::MAX_GRAD_NORM),
        weight_decay: float_in(
            c.weight_decay,
            "config.weight_decay",
            defaults::MAX_WEIGHT_DECAY,
        )?
        .unwrap_or(0.0),
        gradient_checkpointing: c.gradient_checkpointing,
        base_quantization: parsed(
            c.base_quantization.as_deref(),
            BaseQuantization::parse,
            "config.",
        )?,
        report_to: report_to(c.report_to.as_deref())?,
        save_total_limit: in_range(
            c.save_total_limit,
            "config.save_total_limit",
            1,
            max(defaults::MAX_SAVE_TOTAL_LIMIT),
        )?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_reference_behaviour() {
        let extras = validate_extras(&TinkerSftJobConfig::default()).unwrap();
        assert_eq!(extras, TrainingExtras::default());
        assert_eq!(extras.lora_target_modules, LoraTargets::AllLinear);
    }

    #[test]
    fn report_to_takes_known_trackers_once_and_none() {
        let mut c = TinkerSftJobConfig {
            report_to: Some(vec![
                "tensorboard".into(),
                "none".into(),
                "mlflow".into(),
                "tensorboard".into(),
            ]),
            ..Default::default()
        };
        assert_eq!(
            validate_extras(&c).unwrap().report_to,
            [Tracker::TensorBoard, Tracker::Mlflow]
        );
        c.report_to = Some(vec!["none".into()]);
        assert!(validate_extras(&c).unwrap().report_to.is_empty());
        c.report_to = Some(vec!["wandb".into()]);
        let e = validate_extras(&c).unwrap_err().to_string();
        assert!(
            e.contains("config.report_to")
                && e.contains("wandb")
                && e.contains("tensorboard")
                && e.contains("mlflow"),
            "{e}"
        );
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
            validate_extras(&c).unwrap().lora_target_modules.as_names(),
            ["v_proj", "q_proj"]
        );
        c.lora_target_modules = Some(vec!["qkv_proj".into(), "all-linear".into()]);
        assert_eq!(
            validate_extras(&c).unwrap().lora_target_modules,
            LoraTargets::AllLinear
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
        assert_eq!(
            validate_extras(&c).unwrap().train_on,
            TrainOn::LastAssistant
        );
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
