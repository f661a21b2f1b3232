//! The tiny random model of each family (tests/fixtures/families, saved by transformers 5) and PEFT's
//! reference for it (scripts/reference/family_models.py).

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use dn_train::{BaseModel, Executor, LoraConfig, LoraModel, TrainExample};
use serde_json::Value;

pub const FAMILIES: [&str; 7] = [
    "llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3", "phi3",
];

pub fn family_dir(family: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/families")
        .join(family)
}

pub fn model_dir(family: &str) -> PathBuf {
    family_dir(family).join("model")
}

pub struct Reference {
    pub json: Value,
    pub examples: Vec<TrainExample>,
    /// Step-1 LoRA gradients by PEFT name (`base_model.model.<module>.lora_A.weight`).
    pub grads: HashMap<String, Tensor>,
}

pub fn reference(family: &str) -> Reference {
    let dir = family_dir(family);
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
            .unwrap();
    let examples = json["examples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| TrainExample {
            input_ids: serde_json::from_value(e["input_ids"].clone()).unwrap(),
            loss_mask: serde_json::from_value(e["loss_mask"].clone()).unwrap(),
        })
        .collect();
    let grads =
        candle_core::safetensors::load(dir.join("grads.safetensors"), &Device::Cpu).unwrap();
    Reference {
        json,
        examples,
        grads,
    }
}

/// The family's model in `dtype` with the reference's LoRA (rank 4, alpha 8, every projection) and its
/// closed-form A and B: A = sin(0.7 k + 1.3 o) / sqrt(cols), B = 0.1 cos(0.3 k + 0.9 o), k the flat
/// index, o the pair's ordinal (layer, then projection order).
pub fn model(family: &str, dtype: DType) -> LoraModel {
    model_on(family, dtype, Executor::default_for(&Device::Cpu, dtype))
}

/// [`model`] computed by `executor`.
pub fn model_on(family: &str, dtype: DType, executor: Executor) -> LoraModel {
    let base = BaseModel::load(&model_dir(family), dtype, &Device::Cpu).unwrap();
    let model = LoraModel::with_executor(&base, &LoraConfig::new(4, 8.0), 0, executor).unwrap();
    for (ordinal, pair) in model.lora_pairs().into_iter().enumerate() {
        let o = ordinal as f64;
        for (var, is_a) in [(&pair.a, true), (&pair.b, false)] {
            let (rows, cols) = var.as_tensor().dims2().unwrap();
            let values: Vec<f64> = (0..rows * cols)
                .map(|k| {
                    let k = k as f64;
                    if is_a {
                        (0.7 * k + 1.3 * o).sin() / (cols as f64).sqrt()
                    } else {
                        0.1 * (0.3 * k + 0.9 * o).cos()
                    }
                })
                .collect();
            let t = Tensor::from_vec(values, (rows, cols), &Device::Cpu)
                .unwrap()
                .to_dtype(var.as_tensor().dtype())
                .unwrap();
            var.set(&t).unwrap();
        }
    }
    model
}

/// `|a - b| / |b|` over all elements.
pub fn relative_error(a: &Tensor, b: &Tensor) -> f64 {
    let a = a.to_dtype(DType::F64).unwrap();
    let b = b.to_dtype(DType::F64).unwrap();
    let norm = |t: &Tensor| {
        t.sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .sqrt()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    };
    norm(&(&a - &b).unwrap()) / norm(&b)
}

/// The family's model as hub repos hold it in the older layout: the same weights and tokenizer, with the
/// config.json transformers 4.57 wrote and the chat template inside tokenizer_config.json.
pub fn legacy_dir(family: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(model_dir(family)).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        if !matches!(
            name.as_str(),
            "config.json" | "tokenizer_config.json" | "chat_template.jinja"
        ) {
            std::fs::copy(&path, dir.path().join(&name)).unwrap();
        }
    }
    for name in ["config.json", "tokenizer_config.json"] {
        std::fs::copy(
            family_dir(family).join("legacy").join(name),
            dir.path().join(name),
        )
        .unwrap();
    }
    dir
}
