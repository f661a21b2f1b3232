//! The mixture-of-experts families (Qwen3-MoE with a dense layer between sparse ones and no top-k
//! renormalisation, Mixtral renormalised and windowed) against transformers 5 + PEFT's `target_parameters`
//! on their tiny random models (scripts/reference/family_models.py): step-1 loss and every LoRA gradient,
//! the experts' included, on both executors; three AdamW steps; the fused and per-expert layouts of the same
//! weights as one model.

mod common;

use common::families::{MOE_FAMILIES, family_dir, model_dir, reference, step_one, three_steps};
use common::sequences;
use dn_train::{BaseModel, DType, Device, Executor, LoraConfig, LoraModel, evaluate};

#[test]
fn step_one_loss_and_gradients_match_peft_on_the_graph() {
    for family in MOE_FAMILIES {
        step_one(family, Executor::Graph);
    }
}

#[test]
fn step_one_loss_and_gradients_match_peft_on_the_cpu_engine() {
    for family in MOE_FAMILIES {
        step_one(family, Executor::CpuEngine);
    }
}

#[test]
fn three_adamw_steps_match_peft() {
    for family in MOE_FAMILIES {
        three_steps(family);
    }
}

/// The model directory holds the experts one by one (as transformers' `save_pretrained` and hub repos
/// do; Mixtral's under `block_sparse_moe.`); fused.safetensors holds the same weights fused as
/// transformers 5 holds them in memory. Both load as the same tensors and train as the same model.
#[test]
fn fused_and_per_expert_layouts_are_the_same_model() {
    for family in MOE_FAMILIES {
        let fused = tempfile::tempdir().unwrap();
        for name in ["config.json", "generation_config.json"] {
            std::fs::copy(model_dir(family).join(name), fused.path().join(name)).unwrap();
        }
        std::fs::copy(
            family_dir(family).join("fused.safetensors"),
            fused.path().join("model.safetensors"),
        )
        .unwrap();
        let load = |dir: &std::path::Path| BaseModel::load(dir, DType::F32, &Device::Cpu).unwrap();
        let (per_expert, fused) = (load(&model_dir(family)), load(fused.path()));
        let mut names: Vec<&String> = fused.tensors.keys().collect();
        names.sort();
        let mut other: Vec<&String> = per_expert.tensors.keys().collect();
        other.sort();
        assert_eq!(names, other, "{family}: tensor names");
        for name in names {
            let (a, b) = (&fused.tensors[name], &per_expert.tensors[name]);
            assert_eq!(a.dims(), b.dims(), "{family}: {name}");
            let diff = (a - b)
                .unwrap()
                .abs()
                .unwrap()
                .flatten_all()
                .unwrap()
                .max(0)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert_eq!(diff, 0.0, "{family}: {name}");
        }
        let r = reference(family);
        let seqs = sequences(&r.examples);
        let loss = |base: &BaseModel| {
            let model = LoraModel::new(base, &LoraConfig::new(4, 8.0), 3).unwrap();
            evaluate(&model, &seqs).unwrap().nll_sum().unwrap()
        };
        assert_eq!(loss(&fused), loss(&per_expert), "{family}");
    }
}
