//! What only the mixture-of-experts families have (Qwen3-MoE with a dense layer between sparse ones and no
//! top-k renormalisation, Mixtral renormalised and windowed; their parity with transformers 5 + PEFT's
//! `target_parameters` is in families.rs with every family): the fused and per-expert layouts of the same
//! weights as one model, the trainable parameters per group and the routers' load per eval.

mod common;

use common::families::{MOE_FAMILIES, family_dir, model_dir, reference};
use common::sequences;
use dn_train::{BaseModel, DType, Device, LoraConfig, LoraModel, evaluate};

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

/// The job log's figures: trainable parameters per group (the experts' pairs reported apart, no dense
/// MLP pair in a MoE model, routers frozen unless named), and each eval's router load over the eval tokens alone.
#[test]
fn trainable_groups_and_router_load_per_eval() {
    use dn_train::{Control, Event, TrainOptions, Trainer};
    let model = common::families::model("qwen3_moe", DType::F32);
    let groups = model.trainable_by_group();
    let names: Vec<&str> = groups.iter().map(|(g, _)| *g).collect();
    assert_eq!(names, ["attention", "experts"]);
    // Layers 0 and 2: 6 experts x rank 4 x (32 + 48) for gate_up, x (24 + 32) for down.
    assert_eq!(groups[1].1, 2 * 6 * 4 * (32 + 48 + 24 + 32));
    let r = reference("qwen3_moe");
    let dir = tempfile::tempdir().unwrap();
    let trainer = Trainer {
        model: &model,
        options: TrainOptions {
            learning_rate: 1e-3,
            batch_size: 3,
            steps: Some(2),
            eval_interval: 1,
            checkpoint_interval: 0,
            ..Default::default()
        },
        checkpoint_dir: dir.path().to_path_buf(),
        base_model_name: "qwen3_moe".into(),
    };
    let eval = r.examples[..2].to_vec();
    let eval_tokens: usize = eval.iter().map(|e| e.input_ids.len()).sum();
    let mut loads = Vec::new();
    trainer
        .run(&r.examples, &eval, None, &mut |event| {
            if let Event::EvalComplete { router_load, .. } = event {
                loads.push(router_load.clone());
            }
            Control::Continue
        })
        .unwrap();
    assert_eq!(loads.len(), 3, "before training, after step 1, final");
    for load in loads {
        let layers: Vec<usize> = load.iter().map(|l| l.layer).collect();
        assert_eq!(layers, [0, 2], "the sparse layers");
        for l in &load {
            assert_eq!(l.tokens.len(), 6);
            assert_eq!(l.tokens.iter().sum::<u64>() as usize, eval_tokens * 2);
            let (min, max) = l.min_max_share();
            assert!(min <= max && max <= 1.0);
        }
    }
}

/// The router adapted when `lora_target_modules` names it (`gate`, gpt-oss's `router`): one pair on its
/// `[experts, hidden]` weight, as PEFT's `target_parameters` puts it. Step-1 loss and gradients (the
/// router's pair's included, through the top-k, the renormalisation and the softmax) on both executors,
/// and the logits after three AdamW steps, against PEFT (scripts/reference/family_models.py); the job
/// log's groups report the router apart.
#[test]
fn a_router_named_in_the_targets_trains_as_peft_trains_it() {
    use common::families::{Targets, model_with, step_one_with, three_steps_with};
    use dn_train::Executor;
    for family in MOE_FAMILIES {
        step_one_with(family, Executor::CpuEngine, Targets::WithRouter);
        step_one_with(family, Executor::Graph, Targets::WithRouter);
        three_steps_with(family, Targets::WithRouter);
    }
    let model = model_with(
        "qwen3_moe",
        DType::F32,
        Executor::CpuEngine,
        Targets::WithRouter,
    );
    let groups = model.trainable_by_group();
    let names: Vec<&str> = groups.iter().map(|(g, _)| *g).collect();
    assert_eq!(names, ["attention", "router", "experts"]);
    // Layers 0 and 2: rank 4 x (hidden 32 + 6 experts).
    assert_eq!(groups[1].1, 2 * 4 * (32 + 6));
}

/// gpt-oss's experts as its checkpoints hold them, MXFP4 blocks and scales under a `quant_method: mxfp4`
/// config (scripts/reference/gpt_oss_mxfp4.py packs the tiny model's experts so): kept in MXFP4 and decoded
/// an expert at a time, the model computes the logits transformers computes loading the same directory.
#[test]
fn gpt_oss_mxfp4_experts_decode_to_transformers_model() {
    use dn_train::{Sequence, logits_at};
    let dir = family_dir("gpt_oss");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("mxfp4_reference.json")).unwrap())
            .unwrap();
    let ids: Vec<u32> = serde_json::from_value(json["input_ids"].clone()).unwrap();
    let want: Vec<Vec<f64>> = serde_json::from_value(json["logits"].clone()).unwrap();
    let base = BaseModel::load(&dir.join("mxfp4"), DType::F32, &Device::Cpu).unwrap();
    let model = LoraModel::new(&base, &LoraConfig::new(4, 8.0), 0).unwrap();
    let mask = vec![1u8; ids.len()];
    let seqs = [Sequence {
        input_ids: &ids,
        loss_mask: &mask,
    }];
    let rows: Vec<u32> = (0..ids.len() as u32).collect();
    let got: Vec<Vec<f32>> = logits_at(&model, &seqs, &rows).unwrap().to_vec2().unwrap();
    let (mut diff, mut scale) = (0.0f64, 0.0f64);
    for (g, w) in got.iter().zip(&want) {
        for (a, b) in g.iter().zip(w) {
            diff = diff.max((*a as f64 - b).abs());
            scale = scale.max(b.abs());
        }
    }
    assert!(diff / scale < 1e-5, "logits differ: {diff} of {scale}");
    // The plain checkpoint's experts are not the quantized ones: the decoding is what made them equal.
    let plain = BaseModel::load(&model_dir("gpt_oss"), DType::F32, &Device::Cpu).unwrap();
    let name = "model.layers.0.mlp.experts.gate_up_proj";
    assert_eq!(base.quantized[name].format(), "MXFP4", "kept as stored");
    let gap = (&plain.tensors[name] - &base.dense(name, DType::F32).unwrap())
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(gap > 1e-3, "{gap}");
}
