//! Checkpoints: a PEFT adapter directory (`adapter_model.safetensors` with only lora_A/lora_B under PEFT
//! names, `adapter_config.json`) plus the trainer state (`trainer_state.json`, `optimizer.safetensors`).
//! A checkpoint is written into `<name>.partial` and renamed into place: a directory without that suffix
//! is always complete.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::error::{Error, Result};
use crate::lora::LoraConfig;
use crate::model::LoraModel;
use crate::optim::{AdamW, AdamWConfig};

pub const ADAPTER_FILE: &str = "adapter_model.safetensors";
pub const ADAPTER_CONFIG_FILE: &str = "adapter_config.json";
pub const STATE_FILE: &str = "trainer_state.json";
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";

/// One optimizer step as it is reported and kept in the trainer state (so a resumed run continues one
/// series).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// 1-based optimizer step.
    pub step: u64,
    /// 0-based epoch the step's examples came from.
    pub epoch: u64,
    pub loss: f64,
    pub learning_rate: f64,
    pub grad_norm: f64,
    pub num_sequences: usize,
    pub num_tokens: usize,
    pub num_supervised_tokens: usize,
    pub step_seconds: f64,
    /// The step's model FLOPs as MFU counts them: each sequence's tokens times
    /// [`dn_arch::ModelConfig::training_flops_per_token`] at its length (0 in checkpoints from before).
    #[serde(default)]
    pub model_flops: f64,
    /// The GPU's memory in use after the step, all processes' as its driver counts it (nvidia-smi's
    /// "used"); `None` on the CPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_memory_used: Option<u64>,
}

/// Everything besides tensors needed to continue a run exactly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    pub format: u32,
    /// Optimizer steps taken.
    pub step: u64,
    pub total_steps: u64,
    /// Epoch and position within it of the next example to train on.
    pub epoch: u64,
    pub data_position: u64,
    /// The seed LoRA init and every epoch's shuffle derive from (the data order needs no other RNG state).
    pub seed: u64,
    pub lora: LoraConfig,
    pub adam: AdamWConfig,
    pub optimizer_updates: u64,
    pub history: Vec<StepRecord>,
    #[serde(default)]
    pub eval_history: Vec<(u64, f64)>,
}

fn io_err(path: &Path, what: &str, e: impl std::fmt::Display) -> Error {
    Error::checkpoint(path, format!("{what}: {e}"))
}

/// `adapter_config.json` as PEFT writes it for a LoRA causal-LM adapter.
pub fn adapter_config(model: &LoraModel, base_model: &str) -> serde_json::Value {
    let lora = &model.lora;
    json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model,
        "r": lora.rank,
        "lora_alpha": lora.alpha,
        "lora_dropout": 0.0,
        "target_modules": lora.peft_target_modules(&model.config),
        "target_parameters": lora.peft_target_parameters(&model.config),
        "bias": "none",
        "fan_in_fan_out": false,
        "inference_mode": true,
        "init_lora_weights": true,
        "modules_to_save": null,
        "use_rslora": false,
        "use_dora": false,
        "rank_pattern": {},
        "alpha_pattern": {},
        "layers_to_transform": null,
        "layers_pattern": null,
        "revision": null,
    })
}

/// Writes a complete checkpoint to `dir` (via `dir.partial` and a rename); replaces an older one.
pub fn save(
    dir: &Path,
    model: &LoraModel,
    optimizer: &AdamW,
    state: &TrainerState,
    base_model: &str,
) -> Result<PathBuf> {
    let partial = dir.with_extension("partial");
    if partial.exists() {
        std::fs::remove_dir_all(&partial).map_err(|e| io_err(&partial, "cannot clear", e))?;
    }
    std::fs::create_dir_all(&partial).map_err(|e| io_err(&partial, "cannot create", e))?;
    let mut adapter = HashMap::new();
    let mut moments = HashMap::new();
    for (i, pair) in model.lora_pairs().into_iter().enumerate() {
        let f32 = |t: &Tensor| t.to_dtype(candle_core::DType::F32);
        adapter.insert(pair.peft_a_name(), f32(pair.a.as_tensor())?);
        adapter.insert(pair.peft_b_name(), f32(pair.b.as_tensor())?);
        for (j, name) in [pair.peft_a_name(), pair.peft_b_name()]
            .into_iter()
            .enumerate()
        {
            moments.insert(format!("{name}.exp_avg"), optimizer.m[2 * i + j].clone());
            moments.insert(format!("{name}.exp_avg_sq"), optimizer.v[2 * i + j].clone());
        }
    }
    let file = partial.join(ADAPTER_FILE);
    candle_core::safetensors::save(&adapter, &file)
        .map_err(|e| io_err(&file, "cannot write", e))?;
    let file = partial.join(OPTIMIZER_FILE);
    candle_core::safetensors::save(&moments, &file)
        .map_err(|e| io_err(&file, "cannot write", e))?;
    let write_json = |name: &str, value: &serde_json::Value| -> Result<()> {
        let file = partial.join(name);
        let text = serde_json::to_string_pretty(value).expect("json");
        std::fs::write(&file, text).map_err(|e| io_err(&file, "cannot write", e))
    };
    write_json(ADAPTER_CONFIG_FILE, &adapter_config(model, base_model))?;
    write_json(STATE_FILE, &serde_json::to_value(state).expect("json"))?;
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| io_err(dir, "cannot replace", e))?;
    }
    std::fs::rename(&partial, dir).map_err(|e| io_err(dir, "cannot commit", e))?;
    Ok(dir.to_path_buf())
}

/// A checkpoint read back: its state, and the tensors to put into a model and optimizer.
pub struct Checkpoint {
    pub state: TrainerState,
    adapter: HashMap<String, Tensor>,
    moments: HashMap<String, Tensor>,
}

impl Checkpoint {
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let file = dir.join(STATE_FILE);
        let text = std::fs::read_to_string(&file).map_err(|e| io_err(&file, "cannot read", e))?;
        let state: TrainerState =
            serde_json::from_str(&text).map_err(|e| io_err(&file, "not a trainer state", e))?;
        let file = dir.join(ADAPTER_FILE);
        let adapter = candle_core::safetensors::load(&file, device)
            .map_err(|e| io_err(&file, "cannot read", e))?;
        let file = dir.join(OPTIMIZER_FILE);
        let moments = candle_core::safetensors::load(&file, device)
            .map_err(|e| io_err(&file, "cannot read", e))?;
        Ok(Checkpoint {
            state,
            adapter,
            moments,
        })
    }

    fn tensor<'a>(map: &'a HashMap<String, Tensor>, name: &str) -> Result<&'a Tensor> {
        map.get(name).ok_or_else(|| Error::Checkpoint {
            path: name.to_owned(),
            message: "tensor missing from the checkpoint".into(),
        })
    }

    /// Puts the adapter weights into `model` and the moments into `optimizer`.
    pub fn restore(&self, model: &LoraModel, optimizer: &mut AdamW) -> Result<()> {
        if self.state.lora != model.lora {
            return Err(Error::invalid(
                "resume",
                "the checkpoint's LoRA configuration differs from this run's",
            ));
        }
        let dtype = model.lora_dtype();
        for (i, pair) in model.lora_pairs().into_iter().enumerate() {
            for (j, (var, name)) in [(&pair.a, pair.peft_a_name()), (&pair.b, pair.peft_b_name())]
                .into_iter()
                .enumerate()
            {
                var.set(&Self::tensor(&self.adapter, &name)?.to_dtype(dtype)?)?;
                optimizer.m[2 * i + j] =
                    Self::tensor(&self.moments, &format!("{name}.exp_avg"))?.to_dtype(dtype)?;
                optimizer.v[2 * i + j] =
                    Self::tensor(&self.moments, &format!("{name}.exp_avg_sq"))?.to_dtype(dtype)?;
            }
        }
        optimizer.updates = self.state.optimizer_updates;
        Ok(())
    }
}
