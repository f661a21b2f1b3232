//! The tiny random model of each family (tests/fixtures/families, saved by transformers 5) and PEFT's
//! reference for it (scripts/reference/family_models.py).

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use dn_train::{
    BaseModel, Control, Executor, LoraConfig, LoraModel, TrainExample, TrainOptions, Trainer,
    count_targets, forward_backward, logits_at,
};

use super::sequences;
use serde_json::Value;

pub const FAMILIES: [&str; 11] = [
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
];

/// The mixture-of-experts families among them.
pub const MOE_FAMILIES: [&str; 4] = ["qwen3_moe", "qwen2_moe", "gpt_oss", "mixtral"];

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

/// What the reference's LoRA targets: every projection (`all-linear`), or, in a mixture of experts,
/// the router too (`router_reference.json`, `router_grads.safetensors`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Targets {
    AllLinear,
    WithRouter,
}

impl Targets {
    fn stem(self) -> &'static str {
        match self {
            Targets::AllLinear => "",
            Targets::WithRouter => "router_",
        }
    }

    /// Rank 4, alpha 8, on these targets of `base`'s model.
    pub fn lora(self, base: &BaseModel) -> LoraConfig {
        let mut lora = LoraConfig::new(4, 8.0);
        if self == Targets::WithRouter {
            let router = base.config.router_target().expect("a mixture of experts");
            let names = [
                "q_proj",
                "k_proj",
                "v_proj",
                "o_proj",
                router,
                "gate_up_proj",
                "down_proj",
            ];
            lora.target_modules = dn_train::LoraTargets::Modules(names.map(String::from).to_vec());
        }
        lora
    }
}

/// Every family with its default targets, and the mixtures of experts with their routers too.
pub fn cases() -> impl Iterator<Item = (&'static str, Targets)> {
    FAMILIES
        .into_iter()
        .map(|f| (f, Targets::AllLinear))
        .chain(MOE_FAMILIES.into_iter().map(|f| (f, Targets::WithRouter)))
}

pub fn reference(family: &str) -> Reference {
    reference_for(family, Targets::AllLinear)
}

/// The reference of `family` with `targets`.
pub fn reference_for(family: &str, targets: Targets) -> Reference {
    let dir = family_dir(family);
    let file = dir.join(format!("{}reference.json", targets.stem()));
    let json: Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    let examples = json["examples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| TrainExample {
            input_ids: serde_json::from_value(e["input_ids"].clone()).unwrap(),
            loss_mask: serde_json::from_value(e["loss_mask"].clone()).unwrap(),
        })
        .collect();
    let grads = candle_core::safetensors::load(
        dir.join(format!("{}grads.safetensors", targets.stem())),
        &Device::Cpu,
    )
    .unwrap();
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
    model_with(family, dtype, executor, Targets::AllLinear)
}

/// [`model_on`] with `targets`.
pub fn model_with(family: &str, dtype: DType, executor: Executor, targets: Targets) -> LoraModel {
    let base = BaseModel::load(&model_dir(family), dtype, &Device::Cpu).unwrap();
    let model = LoraModel::with_executor(&base, &targets.lora(&base), 0, executor).unwrap();
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

/// The step-1 loss and every LoRA gradient of `family`'s model on `executor` within 1e-4 of PEFT's.
pub fn step_one(family: &str, executor: Executor) {
    step_one_with(family, executor, Targets::AllLinear)
}

/// [`step_one`] with `targets`.
pub fn step_one_with(family: &str, executor: Executor, targets: Targets) {
    let r = reference_for(family, targets);
    let model = model_with(family, DType::F32, executor, targets);
    let seqs = sequences(&r.examples);
    let normaliser = count_targets(&seqs);
    assert_eq!(normaliser as u64, r.json["normaliser"].as_u64().unwrap());
    let (loss, grads) = forward_backward(&model, &seqs, normaliser).unwrap();
    let grads = grads.unwrap();
    let loss = loss.nll_sum().unwrap() / normaliser as f64;
    let want = r.json["losses"][0].as_f64().unwrap();
    let rel = (loss - want).abs() / want;
    let engine = format!("{executor:?}, {targets:?}");
    assert!(
        rel < 1e-4,
        "{family} ({engine}): loss {loss} vs PEFT {want}"
    );
    let mut worst = 0.0f64;
    for (pair, g) in model.lora_pairs().into_iter().zip(grads.chunks(2)) {
        for (name, grad) in [(pair.peft_a_name(), &g[0]), (pair.peft_b_name(), &g[1])] {
            let want = r
                .grads
                .get(&name)
                .unwrap_or_else(|| panic!("{family}: PEFT has no {name}"));
            let rel = relative_error(grad, want);
            worst = worst.max(rel);
            assert!(
                rel < 1e-4,
                "{family} ({engine}): {name} relative error {rel:e}"
            );
        }
    }
    assert_eq!(grads.len(), r.grads.len(), "{family}: LoRA tensor count");
    println!("{family} ({engine}): step-1 loss rel {rel:.1e}, worst LoRA gradient rel {worst:.1e}");
}

/// Three AdamW steps on `family`'s model: the step losses and the final logits match PEFT's.
pub fn three_steps(family: &str) {
    three_steps_with(family, Targets::AllLinear)
}

/// [`three_steps`] with `targets`.
pub fn three_steps_with(family: &str, targets: Targets) {
    let r = reference_for(family, targets);
    let executor = Executor::default_for(&Device::Cpu, DType::F32);
    let model = model_with(family, DType::F32, executor, targets);
    let dir = tempfile::tempdir().unwrap();
    let trainer = Trainer {
        model: &model,
        options: TrainOptions {
            learning_rate: r.json["learning_rate"].as_f64().unwrap(),
            batch_size: r.examples.len(),
            steps: Some(3),
            checkpoint_interval: 0,
            ..Default::default()
        },
        checkpoint_dir: dir.path().to_path_buf(),
        base_model_name: family.into(),
    };
    let summary = trainer
        .run(&r.examples, &[], None, &mut |_| Control::Continue)
        .unwrap();
    let losses: Vec<f64> = serde_json::from_value(r.json["losses"].clone()).unwrap();
    for (record, want) in summary.history.iter().zip(&losses) {
        let rel = (record.loss - want).abs() / want;
        assert!(
            rel < 1e-4,
            "{family}: step {} loss {} vs {want}",
            record.step,
            record.loss
        );
    }
    let rows: Vec<u32> = serde_json::from_value(r.json["logit_rows"].clone()).unwrap();
    let want: Vec<Vec<f64>> = serde_json::from_value(r.json["logits"].clone()).unwrap();
    let got: Vec<Vec<f32>> = logits_at(&model, &sequences(&r.examples), &rows)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
        .to_vec2()
        .unwrap();
    let (mut max_diff, mut max_abs) = (0.0f64, 0.0f64);
    for (row, want_row) in got.iter().zip(&want) {
        assert_eq!(row.len(), want_row.len());
        for (a, b) in row.iter().zip(want_row) {
            max_diff = max_diff.max((*a as f64 - b).abs());
            max_abs = max_abs.max(b.abs());
        }
    }
    let rel = max_diff / max_abs;
    println!(
        "{family} ({targets:?}): 3 steps, last loss {:.6}, logits max |diff| {max_diff:.1e} (rel {rel:.1e})",
        summary.history[2].loss
    );
    assert!(
        rel < 1e-3,
        "{family}: logits after 3 steps, relative {rel:e}"
    );
}
