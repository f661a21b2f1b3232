//! Each family against transformers + PEFT on its tiny random model (saved by transformers 5, reference
//! computed by scripts/reference/family_models.py): the step-1 loss and every LoRA gradient within 1e-4
//! relative, on the CPU engine and on the candle graph (the CUDA path); then three AdamW steps, whose
//! losses and final logits must match.

mod common;

use common::sequences;

use common::families::{FAMILIES, reference, step_one, three_steps};
use dn_train::{DType, Executor};

#[test]
fn step_one_loss_and_gradients_match_peft_on_the_cpu_engine() {
    for family in FAMILIES {
        step_one(family, Executor::CpuEngine);
    }
}

#[test]
fn step_one_loss_and_gradients_match_peft_on_the_graph() {
    for family in FAMILIES {
        step_one(family, Executor::Graph);
    }
}

#[test]
fn three_adamw_steps_match_peft() {
    for family in FAMILIES {
        three_steps(family);
    }
}

/// A directory in the older layout (rope keys at the top of config.json, written by transformers 4.57)
/// is the very same model: same architecture, same loss to the bit.
#[test]
fn the_older_config_layout_is_the_same_model() {
    use dn_train::{BaseModel, Device, LoraConfig, LoraModel, evaluate};
    for family in FAMILIES {
        let legacy = common::families::legacy_dir(family);
        let load = |dir: &std::path::Path| BaseModel::load(dir, DType::F32, &Device::Cpu).unwrap();
        let (new, old) = (
            load(&common::families::model_dir(family)),
            load(legacy.path()),
        );
        assert_eq!(new.config, old.config, "{family}");
        let r = reference(family);
        let seqs = sequences(&r.examples);
        let loss = |base: &BaseModel| {
            let model = LoraModel::new(base, &LoraConfig::new(4, 8.0), 3).unwrap();
            evaluate(&model, &seqs).unwrap().nll_sum().unwrap()
        };
        assert_eq!(loss(&new), loss(&old), "{family}");
    }
}

/// Gemma 3's multimodal checkpoint (a vision tower around the same text weights) trains its text model:
/// the same model as the text-only directory, with LoRA names and targets that reach the text blocks only.
#[test]
fn gemma3_multimodal_checkpoints_train_their_text_model() {
    use dn_train::{BaseModel, Device, LoraConfig, LoraModel, evaluate};
    let dir = common::families::family_dir("gemma3");
    let load = |sub: &str| BaseModel::load(&dir.join(sub), DType::F32, &Device::Cpu).unwrap();
    let (text, multimodal) = (load("model"), load("multimodal"));
    assert_eq!(multimodal.config.prefix, "model.language_model.");
    assert!(
        !multimodal.tensors.keys().any(|k| k.contains("vision")),
        "the vision tower is not loaded"
    );
    let r = reference("gemma3");
    let seqs = sequences(&r.examples);
    let build = |base: &BaseModel| LoraModel::new(base, &LoraConfig::new(4, 8.0), 3).unwrap();
    let (a, b) = (build(&text), build(&multimodal));
    assert_eq!(
        evaluate(&a, &seqs).unwrap().nll_sum().unwrap(),
        evaluate(&b, &seqs).unwrap().nll_sum().unwrap()
    );
    assert_eq!(
        b.lora_pairs()[0].peft_a_name(),
        "base_model.model.model.language_model.layers.0.self_attn.q_proj.lora_A.weight"
    );
    let config = dn_train::adapter_config(&b, "m");
    let pattern = config["target_modules"].as_str().unwrap();
    assert!(
        pattern.starts_with(r"model\.language_model\.layers\.\d+\."),
        "{pattern}"
    );
}

/// A checkpoint whose tensors disagree with its config is refused, naming the tensor (the executors would
/// otherwise read past or short of it).
#[test]
fn tensors_of_the_wrong_shape_are_refused_by_name() {
    use dn_train::{BaseModel, Device, LoraConfig, LoraModel};
    for name in [
        "model.layers.1.post_attention_layernorm.weight",
        "model.embed_tokens.weight",
        "model.layers.0.self_attn.q_proj.bias",
    ] {
        let mut base = BaseModel::load(
            &common::families::model_dir("llama"),
            DType::F32,
            &Device::Cpu,
        )
        .unwrap();
        let wrong = candle_core::Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap();
        base.tensors.insert(name.into(), wrong);
        let e = LoraModel::new(&base, &LoraConfig::new(4, 8.0), 0)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains(name) && e.contains("the config makes it"), "{e}");
    }
}
