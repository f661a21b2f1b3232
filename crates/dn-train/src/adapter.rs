//! PEFT LoRA adapters read back (a job's checkpoint, or any PEFT adapter directory): `adapter_config.json`
//! checked for what dn applies (plain LoRA, `scale = lora_alpha / r`, on the family's projections), the
//! pairs loaded from `adapter_model.safetensors` into a [`LoraModel`] over a base.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use candle_core::Tensor;
use serde_json::Value;

use crate::checkpoint::{ADAPTER_CONFIG_FILE, ADAPTER_FILE};
use crate::error::{Error, Result};
use crate::lora::LoraConfig;
use crate::model::LoraModel;
use crate::weights::BaseModel;

fn adapter_error(path: &Path, message: impl Into<String>) -> Error {
    Error::checkpoint(path, message.into())
}

/// A PEFT LoRA adapter's settings that dn applies.
struct AdapterSettings {
    rank: usize,
    alpha: f64,
    /// The parameters with pairs (`target_parameters`), as dn's target names: the router (`gate`,
    /// `router`) and the experts' fused tensors with a pair per expert (`gate_up_proj`, `down_proj`).
    expert_targets: Vec<String>,
}

/// `target_parameters` as dn's target names; any other parameter is refused by name.
fn expert_targets(value: Option<&Value>, path: &Path) -> Result<Vec<String>> {
    let Some(list) = value else {
        return Ok(Vec::new());
    };
    let items = list
        .as_array()
        .ok_or_else(|| adapter_error(path, "target_parameters must be a list"))?;
    let experts = dn_arch::EXPERT_TARGETS.map(|t| (t, format!("experts.{t}")));
    let routers = dn_arch::ROUTER_TARGETS.map(|t| (t, format!("{t}.weight")));
    items
        .iter()
        .map(|item| {
            let name = item.as_str().unwrap_or_default();
            let name = name.strip_prefix("mlp.").unwrap_or(name);
            experts
                .iter()
                .chain(&routers)
                .find(|(_, parameter)| name == parameter)
                .map(|(t, _)| t.to_string())
                .ok_or_else(|| {
                    adapter_error(
                        path,
                        format!(
                            "target_parameters: {item} is not supported (mlp.experts.gate_up_proj, \
                             mlp.experts.down_proj and the router's mlp.gate.weight or mlp.router.weight are)"
                        ),
                    )
                })
        })
        .collect()
}

/// Rank, alpha and expert targets of a PEFT LoRA adapter; anything that changes what the pairs compute
/// and that dn does not apply is refused by name.
fn read_config(dir: &Path) -> Result<AdapterSettings> {
    let path = dir.join(ADAPTER_CONFIG_FILE);
    let config = dn_model::model_files::read_json(&path).map_err(|e| adapter_error(dir, e))?;
    let field = |name: &str| config.get(name).filter(|v| !v.is_null());
    if let Some(kind) = field("peft_type").and_then(Value::as_str)
        && kind != "LORA"
    {
        return Err(adapter_error(
            &path,
            format!("peft_type {kind:?}: only LORA adapters are supported"),
        ));
    }
    let unsupported = [
        (
            "use_dora",
            field("use_dora").and_then(Value::as_bool) == Some(true),
        ),
        (
            "use_rslora",
            field("use_rslora").and_then(Value::as_bool) == Some(true),
        ),
        (
            "fan_in_fan_out",
            field("fan_in_fan_out").and_then(Value::as_bool) == Some(true),
        ),
        (
            "rank_pattern",
            field("rank_pattern")
                .and_then(Value::as_object)
                .is_some_and(|m| !m.is_empty()),
        ),
        (
            "alpha_pattern",
            field("alpha_pattern")
                .and_then(Value::as_object)
                .is_some_and(|m| !m.is_empty()),
        ),
        (
            "layers_to_transform",
            field("layers_to_transform").is_some(),
        ),
        (
            "modules_to_save",
            field("modules_to_save")
                .and_then(Value::as_array)
                .is_some_and(|m| !m.is_empty()),
        ),
        (
            "bias",
            field("bias")
                .and_then(Value::as_str)
                .is_some_and(|b| b != "none"),
        ),
    ];
    if let Some((name, _)) = unsupported.iter().find(|(_, set)| *set) {
        return Err(adapter_error(
            &path,
            format!("{name} is set: dn applies plain LoRA adapters only"),
        ));
    }
    let rank = field("r")
        .and_then(Value::as_u64)
        .filter(|r| *r >= 1)
        .ok_or_else(|| adapter_error(&path, "r must be a whole number of at least 1"))?;
    // PEFT's default alpha is 8.
    let alpha = match field("lora_alpha") {
        None => 8.0,
        Some(v) => v
            .as_f64()
            .filter(|a| *a > 0.0)
            .ok_or_else(|| adapter_error(&path, "lora_alpha must be a positive number"))?,
    };
    Ok(AdapterSettings {
        rank: rank as usize,
        alpha,
        expert_targets: expert_targets(field("target_parameters"), &path)?,
    })
}

/// `base_model.model.{module}.lora_{A,B}.weight` -> `module`.
fn pair_module(name: &str) -> Option<&str> {
    let module = name.strip_prefix("base_model.model.")?;
    module
        .strip_suffix(".lora_A.weight")
        .or_else(|| module.strip_suffix(".lora_B.weight"))
}

impl LoraModel {
    /// `base` with the LoRA adapter in `dir` (its pairs' values, not fresh ones). Every pair of the
    /// file must belong to a projection of this model, and every targeted projection must have its pair.
    pub fn with_adapter(base: &BaseModel, dir: &Path) -> Result<Self> {
        let AdapterSettings {
            rank,
            alpha,
            expert_targets,
        } = read_config(dir)?;
        let file = dir.join(ADAPTER_FILE);
        let tensors: HashMap<String, Tensor> =
            candle_core::safetensors::load(&file, &candle_core::Device::Cpu)
                .map_err(|e| adapter_error(&file, format!("cannot read: {e}")))?;
        let mut targets = BTreeSet::new();
        for name in tensors.keys() {
            let module = pair_module(name).ok_or_else(|| {
                adapter_error(&file, format!("{name} is not a PEFT LoRA tensor name"))
            })?;
            // The experts' pairs (`mlp.experts`, `mlp.experts.base_layer`) come from target_parameters.
            if module.ends_with(".mlp.experts") || module.ends_with(".mlp.experts.base_layer") {
                continue;
            }
            let short = module.rsplit('.').next().unwrap_or(module);
            targets.insert(short.to_owned());
        }
        targets.extend(expert_targets);
        if targets.is_empty() {
            return Err(adapter_error(&file, "holds no LoRA tensor"));
        }
        let lora = LoraConfig {
            rank,
            alpha,
            target_modules: crate::lora::LoraTargets::Modules(targets.into_iter().collect()),
        };
        let model = LoraModel::new(base, &lora, 0)?;
        let dtype = model.lora_dtype();
        let mut used = 0;
        for pair in model.lora_pairs() {
            for (var, name) in [(&pair.a, pair.peft_a_name()), (&pair.b, pair.peft_b_name())] {
                let tensor = tensors.get(&name).ok_or_else(|| {
                    adapter_error(
                        &file,
                        format!("{name} is missing (its pair's other half is there)"),
                    )
                })?;
                if tensor.dims() != var.as_tensor().dims() {
                    return Err(adapter_error(
                        &file,
                        format!(
                            "{name} has shape {:?}; this model and r = {rank} make it {:?}",
                            tensor.dims(),
                            var.as_tensor().dims()
                        ),
                    ));
                }
                var.set(&tensor.to_dtype(dtype)?.to_device(model.device())?)?;
                used += 1;
            }
        }
        if used != tensors.len() {
            let known: BTreeSet<String> = model
                .lora_pairs()
                .iter()
                .flat_map(|p| [p.peft_a_name(), p.peft_b_name()])
                .collect();
            let stray = tensors
                .keys()
                .find(|n| !known.contains(*n))
                .cloned()
                .unwrap_or_default();
            return Err(adapter_error(
                &file,
                format!("{stray} belongs to no projection of this model"),
            ));
        }
        Ok(model)
    }
}
