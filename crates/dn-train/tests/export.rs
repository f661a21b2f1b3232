//! Merged export: a base model with a LoRA adapter folded into its weights (the experts' too, written back
//! in the layout the base stored them in), written as a model directory
//! or a GGUF file, computes what the base with the adapter computes (the families' tiny models: logits
//! within 1e-5 relative in f32, sharded; SmolLM2 from its GGUF with a PEFT adapter: the same 32 greedy
//! tokens as transformers + PEFT, its tokenizer read back from the GGUF tokenizing alike, q8_0 within its
//! quantization error).

mod common;

use std::collections::HashMap;
use std::path::Path;

use candle_core::Tensor;
use common::families::{cases, model, model_dir, model_with, reference};
use common::generation::{self, fixtures, greedy, imported_smollm2};
use common::sequences;
use dn_train::{
    BaseModel, DType, Device, LoraConfig, LoraModel, TensorType, adapter_config, export_gguf,
    logits_at, merge_adapter,
};

/// The model's adapter as PEFT saves it.
fn save_adapter(model: &LoraModel, dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    for pair in model.lora_pairs() {
        tensors.insert(pair.peft_a_name(), pair.a.as_tensor().clone());
        tensors.insert(pair.peft_b_name(), pair.b.as_tensor().clone());
    }
    candle_core::safetensors::save(&tensors, dir.join(dn_train::ADAPTER_FILE)).unwrap();
    let config = adapter_config(model, "base");
    std::fs::write(
        dir.join(dn_train::ADAPTER_CONFIG_FILE),
        serde_json::to_string(&config).unwrap(),
    )
    .unwrap();
}

/// The tensor names a model directory stores (every shard's).
fn stored_names(dir: &Path) -> Vec<String> {
    let files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    // SAFETY: test fixtures, not modified while mapped.
    let loaded = unsafe { candle_core::safetensors::MmapedSafetensors::multi(&files) }.unwrap();
    let mut names: Vec<String> = loaded.tensors().into_iter().map(|(n, _)| n).collect();
    names.sort();
    names
}

/// The merged model alone (its LoRA pairs add nothing: B = 0).
fn plain(dir: &Path) -> LoraModel {
    let base = BaseModel::load(dir, DType::F32, &Device::Cpu).unwrap();
    LoraModel::new(&base, &LoraConfig::new(1, 1.0), 0).unwrap()
}

fn max_relative(a: &Tensor, b: &Tensor) -> f64 {
    let diff = (a - b).unwrap().abs().unwrap().max_all().unwrap();
    let scale = b.abs().unwrap().max_all().unwrap();
    diff.to_scalar::<f32>().unwrap() as f64 / scale.to_scalar::<f32>().unwrap() as f64
}

#[test]
fn every_family_merged_computes_the_base_with_its_adapter() {
    let dir = tempfile::tempdir().unwrap();
    // The mixtures of experts also with their routers adapted (the adapter read back names them in
    // target_parameters).
    for (family, targets) in cases() {
        let executor = dn_train::Executor::default_for(&Device::Cpu, DType::F32);
        let with_adapter = model_with(family, DType::F32, executor, targets);
        let adapter = dir.path().join(format!("{family}-{targets:?}-adapter"));
        save_adapter(&with_adapter, &adapter);
        let out = dir.path().join(format!("{family}-{targets:?}-merged"));
        // Small shards, so that the index is written too.
        let summary =
            merge_adapter(&model_dir(family), &adapter, &out, DType::F32, 20_000).unwrap();
        assert_eq!(summary.merged, with_adapter.lora_pairs().len(), "{family}");
        assert!(summary.shards.len() > 1, "{family}: {:?}", summary.shards);
        assert!(out.join("model.safetensors.index.json").is_file());
        for file in ["tokenizer.json", "tokenizer_config.json", "config.json"] {
            assert!(out.join(file).is_file(), "{family}: {file}");
        }
        // In the base's own layout (the experts one by one, Mixtral's under block_sparse_moe).
        assert_eq!(
            stored_names(&out),
            stored_names(&model_dir(family)),
            "{family}"
        );
        let r = reference(family);
        let seqs = sequences(&r.examples);
        let rows: Vec<u32> =
            (0..seqs.iter().map(|s| s.input_ids.len()).sum::<usize>() as u32).collect();
        let want = logits_at(&with_adapter, &seqs, &rows).unwrap();
        let got = logits_at(&plain(&out), &seqs, &rows).unwrap();
        let rel = max_relative(&got, &want);
        assert!(rel < 1e-5, "{family}: merged logits relative error {rel:e}");
    }
}

#[test]
fn a_merged_directory_in_bf16_says_so_and_existing_outputs_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let with_adapter = model("llama", DType::F32);
    let adapter = dir.path().join("adapter");
    save_adapter(&with_adapter, &adapter);
    let out = dir.path().join("merged");
    let summary =
        merge_adapter(&model_dir("llama"), &adapter, &out, DType::BF16, u64::MAX).unwrap();
    assert_eq!(summary.shards, vec![out.join("model.safetensors")]);
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["dtype"], "bfloat16");
    let base = BaseModel::load(&out, DType::BF16, &Device::Cpu).unwrap();
    assert!(base.tensors.values().all(|t| t.dtype() == DType::BF16));
    let again = merge_adapter(&model_dir("llama"), &adapter, &out, DType::F32, u64::MAX);
    assert!(again.unwrap_err().to_string().contains("already exists"));
}

#[test]
fn smollm2_merged_with_a_peft_adapter_generates_what_peft_generates() {
    let dir = tempfile::tempdir().unwrap();
    let Some(imported) = imported_smollm2(dir.path()) else {
        return;
    };
    let (prompts, want) = generation::reference(&fixtures().join("smollm2.json"));
    let out = dir.path().join("merged");
    let adapter = fixtures().join("smollm2-adapter");
    merge_adapter(&imported, &adapter, &out, DType::F32, u64::MAX).unwrap();
    assert_eq!(greedy(&plain(&out), &prompts, 32), want);
}

#[test]
fn smollm2_exported_to_gguf_generates_what_peft_generates() {
    let dir = tempfile::tempdir().unwrap();
    let Some(imported) = imported_smollm2(dir.path()) else {
        return;
    };
    let (prompts, want) = generation::reference(&fixtures().join("smollm2.json"));
    let adapter = fixtures().join("smollm2-adapter");
    let out = dir.path().join("merged.gguf");
    let summary = export_gguf(&imported, &adapter, &out, TensorType::F32).unwrap();
    assert_eq!(summary.merged, 90);
    let model = plain(&out);
    assert_eq!(greedy(&model, &prompts, 32), want);
    // The tokenizer read back from the file tokenizes as the model directory's does.
    let meta = dn_model::gguf::GgufMetadata::read(&out).unwrap();
    let from_gguf = dn_model::tokenizer_from_gguf(&meta, "merged.gguf").unwrap();
    let original = dn_render::load_tokenizer(&imported).unwrap();
    for text in [
        "The capital of France is",
        "<|im_start|>user\nHi 123!<|im_end|>\n",
        "  tabs\tand ünïcode",
    ] {
        assert_eq!(
            from_gguf.encode(text, false).unwrap().get_ids(),
            original.encode(text, false).unwrap().get_ids(),
            "{text:?}"
        );
    }
    assert_eq!(meta.str("general.architecture"), Some("llama"));
    assert!(meta.str("tokenizer.chat_template").is_some());
    // q8_0: a quarter of the size, logits within its quantization error.
    let q8 = dir.path().join("merged-q8_0.gguf");
    let small = export_gguf(&imported, &adapter, &q8, TensorType::Q8_0).unwrap();
    assert!(
        small.bytes * 3 < summary.bytes,
        "{} vs {}",
        small.bytes,
        summary.bytes
    );
    let seqs = [dn_train::Sequence {
        input_ids: &prompts[1],
        loss_mask: &vec![0; prompts[1].len()],
    }];
    let last = prompts[1].len() as u32 - 1;
    let rel = max_relative(
        &logits_at(&plain(&q8), &seqs, &[last]).unwrap(),
        &logits_at(&model, &seqs, &[last]).unwrap(),
    );
    assert!(rel < 0.05, "q8_0 logits relative error {rel}");
}

#[test]
fn qwen3_exported_to_gguf_computes_the_merged_model_and_other_models_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let with_adapter = model("qwen3", DType::F32);
    let adapter = dir.path().join("adapter");
    save_adapter(&with_adapter, &adapter);
    let out = dir.path().join("qwen3.gguf");
    export_gguf(&model_dir("qwen3"), &adapter, &out, TensorType::F32).unwrap();
    let r = reference("qwen3");
    let seqs = sequences(&r.examples);
    let rows: Vec<u32> =
        (0..seqs.iter().map(|s| s.input_ids.len()).sum::<usize>() as u32).collect();
    let rel = max_relative(
        &logits_at(&plain(&out), &seqs, &rows).unwrap(),
        &logits_at(&with_adapter, &seqs, &rows).unwrap(),
    );
    assert!(rel < 1e-5, "qwen3 GGUF logits relative error {rel:e}");
    for (family, says) in [("gemma2", "not written yet"), ("qwen2", "rope scaling")] {
        let m = model(family, DType::F32);
        let adapter = dir.path().join(format!("{family}-adapter"));
        save_adapter(&m, &adapter);
        let e = export_gguf(
            &model_dir(family),
            &adapter,
            &dir.path().join(format!("{family}.gguf")),
            TensorType::F16,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains(says), "{family}: {e}");
    }
}

/// The tiny qwen3_moe model as llama.cpp's `qwen3moe` computes it: its two sparse layers (the dense
/// middle one dropped) and the top-k renormalised.
fn qwen3moe_all_sparse(dir: &Path) {
    let fixture = model_dir("qwen3_moe");
    for name in [
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
    ] {
        std::fs::copy(fixture.join(name), dir.join(name)).unwrap();
    }
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture.join("config.json")).unwrap())
            .unwrap();
    config["num_hidden_layers"] = 2.into();
    config["mlp_only_layers"] = serde_json::json!([]);
    config["norm_topk_prob"] = true.into();
    config["dtype"] = "float32".into();
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let fused = candle_core::safetensors::load(
        common::families::family_dir("qwen3_moe").join("fused.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    let kept: HashMap<String, Tensor> = fused
        .into_iter()
        .filter(|(name, _)| !name.starts_with("model.layers.1."))
        .map(|(name, t)| (name.replace("model.layers.2.", "model.layers.1."), t))
        .collect();
    candle_core::safetensors::save(&kept, dir.join("model.safetensors")).unwrap();
}

/// A qwen3_moe model merged and written as llama.cpp's `qwen3moe` (router as ffn_gate_inp, the experts'
/// gate_up split into ffn_gate_exps and ffn_up_exps) reads back as the merged model, through dn's GGUF
/// reader (which fuses the halves again): logits within 1e-5. A model llama.cpp's qwen3moe would
/// compute differently (a dense layer, no renormalisation) is refused, saying why.
#[test]
fn qwen3_moe_exported_to_gguf_reads_back_as_the_merged_model() {
    let dir = tempfile::tempdir().unwrap();
    let base_dir = dir.path().join("qwen3moe");
    std::fs::create_dir_all(&base_dir).unwrap();
    qwen3moe_all_sparse(&base_dir);
    let base = BaseModel::load(&base_dir, DType::F32, &Device::Cpu).unwrap();
    let mut lora = LoraConfig::new(4, 8.0);
    lora.target_modules = dn_train::LoraTargets::Modules(
        ["q_proj", "v_proj", "gate", "gate_up_proj", "down_proj"]
            .map(String::from)
            .to_vec(),
    );
    let with_adapter = LoraModel::new(&base, &lora, 5).unwrap();
    // B away from zero, so that every pair changes the model.
    for (i, pair) in with_adapter.lora_pairs().into_iter().enumerate() {
        let b = pair.b.as_tensor();
        let values = Tensor::randn(0.0f32, 0.2, b.dims(), &Device::Cpu).unwrap();
        pair.b.set(&(values + 0.01 * i as f64).unwrap()).unwrap();
    }
    let adapter = dir.path().join("adapter");
    save_adapter(&with_adapter, &adapter);
    let out = dir.path().join("qwen3moe.gguf");
    let summary = export_gguf(&base_dir, &adapter, &out, TensorType::F32).unwrap();
    assert_eq!(summary.merged, with_adapter.lora_pairs().len());
    let meta = dn_model::gguf::GgufMetadata::read(&out).unwrap();
    assert_eq!(meta.str("general.architecture"), Some("qwen3moe"));
    assert_eq!(meta.u64("qwen3moe.expert_count"), Some(6));
    assert_eq!(meta.u64("qwen3moe.expert_used_count"), Some(2));
    assert_eq!(meta.u64("qwen3moe.expert_feed_forward_length"), Some(24));
    let dims = |name: &str| {
        let info = meta.tensors.iter().find(|t| t.name == name).unwrap();
        info.dims.clone()
    };
    // llama.cpp's shapes (innermost first): {hidden, intermediate, experts}, {intermediate, hidden,
    // experts}, {hidden, experts}.
    assert_eq!(dims("blk.1.ffn_gate_exps.weight"), [32, 24, 6]);
    assert_eq!(dims("blk.1.ffn_up_exps.weight"), [32, 24, 6]);
    assert_eq!(dims("blk.1.ffn_down_exps.weight"), [24, 32, 6]);
    assert_eq!(dims("blk.0.ffn_gate_inp.weight"), [32, 6]);
    let r = reference("qwen3_moe");
    let seqs = sequences(&r.examples);
    let rows: Vec<u32> =
        (0..seqs.iter().map(|s| s.input_ids.len()).sum::<usize>() as u32).collect();
    let rel = max_relative(
        &logits_at(&plain(&out), &seqs, &rows).unwrap(),
        &logits_at(&with_adapter, &seqs, &rows).unwrap(),
    );
    assert!(rel < 1e-5, "qwen3moe GGUF logits relative error {rel:e}");

    let m = model("qwen3_moe", DType::F32);
    let adapter = dir.path().join("dense-layer-adapter");
    save_adapter(&m, &adapter);
    let e = export_gguf(
        &model_dir("qwen3_moe"),
        &adapter,
        &dir.path().join("refused.gguf"),
        TensorType::F32,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("dense layers"), "{e}");
}
