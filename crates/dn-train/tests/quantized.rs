//! Bases kept in their stored quantization (bitsandbytes 4-bit projections, a GGUF's block types) compute
//! what the same bases decoded at load compute: each product decodes its weight (the CPU engine into a
//! buffer freed after it, the graph through its own op), so loss and LoRA gradients are those of the
//! decoded model, on both executors, and merged export writes the decoded weights.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use common::families::relative_error;
use common::sequences;
use dn_train::{
    BaseModel, Executor, LoraConfig, LoraModel, TrainExample, count_targets, forward_backward,
};

fn bnb(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/bnb")
        .join(name)
}

/// `base` with every quantized weight decoded into a tensor, as loading it decoded would hold it.
fn decoded(base: &BaseModel, dtype: DType) -> BaseModel {
    let mut tensors: HashMap<String, Tensor> = base.tensors.clone();
    for name in base.quantized.keys() {
        tensors.insert(name.clone(), base.dense(name, dtype).unwrap());
    }
    BaseModel {
        config: base.config.clone(),
        tensors,
        source: base.source.clone(),
        stored_experts: base.stored_experts,
        quantized: HashMap::new(),
    }
}

fn examples(vocab: usize) -> Vec<TrainExample> {
    [(13usize, 5usize), (9, 3), (6, 2)]
        .iter()
        .enumerate()
        .map(|(i, (len, prompt))| TrainExample {
            input_ids: (0..*len)
                .map(|t| ((t * 37 + i * 11 + 3) % vocab) as u32)
                .collect(),
            loss_mask: (0..*len).map(|t| u8::from(t >= *prompt)).collect(),
        })
        .collect()
}

/// Loss and LoRA gradients of `base` with a seeded rank-4 LoRA on every projection (B away from zero).
fn loss_and_grads(base: &BaseModel, executor: Executor, ex: &[TrainExample]) -> (f64, Vec<Tensor>) {
    let model = LoraModel::with_executor(base, &LoraConfig::new(4, 8.0), 7, executor).unwrap();
    for pair in model.lora_pairs() {
        let b = pair.b.as_tensor();
        let n = b.elem_count();
        let values: Vec<f32> = (0..n).map(|k| 0.05 * ((k as f32) * 0.37).sin()).collect();
        let t = Tensor::from_vec(values, b.dims(), &Device::Cpu).unwrap();
        pair.b.set(&t.to_dtype(b.dtype()).unwrap()).unwrap();
    }
    let seqs = sequences(ex);
    let n = count_targets(&seqs);
    let (loss, grads) = forward_backward(&model, &seqs, n).unwrap();
    (loss.nll_sum().unwrap() / n as f64, grads.unwrap())
}

fn assert_same_model(
    label: &str,
    base: &BaseModel,
    executor: Executor,
    ex: &[TrainExample],
) -> f64 {
    let dense = decoded(base, DType::F32);
    let (loss_q, grads_q) = loss_and_grads(base, executor, ex);
    let (loss_d, grads_d) = loss_and_grads(&dense, executor, ex);
    let rel = (loss_q - loss_d).abs() / loss_d;
    assert!(
        rel < 1e-6,
        "{label} ({executor:?}): loss {loss_q} vs decoded {loss_d}"
    );
    let mut worst: f64 = 0.0;
    for (a, b) in grads_q.iter().zip(&grads_d) {
        worst = worst.max(relative_error(a, b));
    }
    // A head kept quantized is decoded a tile of vocabulary rows at a time: its gradient sums the
    // vocabulary tile by tile, in another order than one product over the whole (f32 rounding).
    let tiled_head = base.quantized.contains_key(&base.config.embed_name());
    assert!(
        worst < if tiled_head { 2e-5 } else { 1e-6 },
        "{label} ({executor:?}): gradients differ by {worst:e}"
    );
    println!("{label} ({executor:?}): loss {loss_q:.6} (rel {rel:.1e}), gradients rel {worst:.1e}");
    loss_q
}

#[test]
fn bitsandbytes_bases_kept_4_bit_compute_the_decoded_model() {
    for variant in ["nf4-dq", "nf4", "fp4-dq"] {
        let base = BaseModel::load(&bnb(variant), DType::F32, &Device::Cpu).unwrap();
        let four_bit: Vec<_> = base
            .quantized
            .values()
            .filter(|q| q.format() == &variant[..3])
            .collect();
        assert_eq!(four_bit.len(), 14, "{variant}: every projection kept 4-bit");
        // 4 bits a weight and an f32 scale per 64: 0.5625 bytes, against 4 decoded.
        let weights: usize = four_bit.iter().map(|q| q.rows * q.cols).sum();
        let bytes: usize = four_bit.iter().map(|q| q.stored_bytes()).sum();
        assert_eq!(bytes, weights / 2 + weights / 64 * 4);
        // The embedding and head, which bitsandbytes leaves unquantized, stay in their stored 16-bit
        // dtype (the nf4 variant was quantized from f32: decoded at load as ever).
        let stored = match variant {
            "nf4-dq" => Some("bf16"),
            "fp4-dq" => Some("f16"),
            _ => None,
        };
        for name in [base.config.embed_name().as_str(), "lm_head.weight"] {
            let kept = base.quantized.get(name).map(|q| q.format());
            assert_eq!(kept, stored, "{variant}: {name}");
        }
        assert_eq!(base.quantized.len(), 14 + 2 * usize::from(stored.is_some()));
        let ex = examples(base.config.vocab_size);
        for executor in [Executor::CpuEngine, Executor::Graph] {
            assert_same_model(variant, &base, executor, &ex);
        }
    }
}

/// gpt-oss's MXFP4 experts kept as stored, one expert's rows decoded per product: the model the decoded
/// experts make, on both executors (the tiny gpt_oss model's experts packed by
/// scripts/reference/gpt_oss_mxfp4.py); `none` decodes them at load.
#[test]
fn mxfp4_experts_kept_as_stored_compute_the_decoded_model() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/families/gpt_oss/mxfp4");
    let base = BaseModel::load(&dir, DType::F32, &Device::Cpu).unwrap();
    let experts: Vec<_> = base
        .quantized
        .iter()
        .filter(|(name, q)| name.contains(".mlp.experts.") && q.format() == "MXFP4")
        .collect();
    assert_eq!(experts.len(), 2 * base.config.num_hidden_layers);
    for (_, q) in &experts {
        // 4 bits a weight and a scale byte per 32: 17 bytes per 32 weights.
        assert_eq!(q.stored_bytes() * 32, q.rows * q.cols * 17);
    }
    let ex = examples(base.config.vocab_size);
    for executor in [Executor::CpuEngine, Executor::Graph] {
        assert_same_model("gpt_oss mxfp4", &base, executor, &ex);
    }
    let decoded = BaseModel::load_with(
        &dir,
        DType::F32,
        &Device::Cpu,
        dn_train::BaseQuantization::None,
    )
    .unwrap();
    assert!(decoded.quantized.is_empty());
    // The memory check counts the kept experts in their stored bytes.
    use dn_train::BaseQuantization::{AsStored, None as Decoded};
    let lora = LoraConfig::new(4, 8.0).resolve(&base.config).unwrap();
    let at = |q| dn_train::estimate_memory_as(&base.config, &lora, &Device::Cpu, 64, false, q);
    let weights: usize = experts.iter().map(|(_, q)| q.rows * q.cols).sum();
    let saved = at(Decoded).weights - at(AsStored).weights;
    assert_eq!(saved as usize, 4 * weights - weights * 17 / 32);
}

/// A quantized base's merged export holds the decoded weights (plus the pairs), and no
/// quantization_config: it loads as a plain model computing the same logits.
#[test]
fn merged_export_of_a_4_bit_base_is_the_decoded_model() {
    let dir = tempfile::tempdir().unwrap();
    let base = BaseModel::load(&bnb("nf4-dq"), DType::F32, &Device::Cpu).unwrap();
    let model = LoraModel::new(&base, &LoraConfig::new(4, 8.0), 3).unwrap();
    let adapter = dir.path().join("adapter");
    std::fs::create_dir_all(&adapter).unwrap();
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    for pair in model.lora_pairs() {
        tensors.insert(pair.peft_a_name(), pair.a.as_tensor().clone());
        let b = (pair.b.as_tensor().ones_like().unwrap() * 0.01).unwrap();
        pair.b.set(&b).unwrap();
        tensors.insert(pair.peft_b_name(), b);
    }
    candle_core::safetensors::save(&tensors, adapter.join(dn_train::ADAPTER_FILE)).unwrap();
    let config = dn_train::adapter_config(&model, "base");
    std::fs::write(
        adapter.join(dn_train::ADAPTER_CONFIG_FILE),
        serde_json::to_string(&config).unwrap(),
    )
    .unwrap();
    let out = dir.path().join("merged");
    dn_train::merge_adapter(&bnb("nf4-dq"), &adapter, &out, DType::F32, 1 << 30).unwrap();
    let config = std::fs::read_to_string(out.join("config.json")).unwrap();
    assert!(!config.contains("quantization_config"), "{config}");
    let merged = BaseModel::load(&out, DType::F32, &Device::Cpu).unwrap();
    assert!(merged.quantized.is_empty());
    let plain = LoraModel::new(&merged, &LoraConfig::new(1, 1.0), 0).unwrap();
    let ex = examples(base.config.vocab_size);
    let seqs = sequences(&ex);
    let rows: Vec<u32> = (0..28).collect();
    let want = dn_train::logits_at(&model, &seqs, &rows).unwrap();
    let got = dn_train::logits_at(&plain, &seqs, &rows).unwrap();
    assert!(relative_error(&got, &want) < 1e-5);
}

/// SmolLM2's Q4_1 GGUF kept as stored (projections Q4_1, the tied embedding Q8_0): the same loss and
/// gradients as its decoded weights, in a fifth of their memory; generation's logits (the head's few-row
/// product) too.
#[test]
fn a_q4_1_gguf_kept_quantized_computes_the_decoded_model() {
    let Some(gguf) = common::test_model() else {
        return;
    };
    let base = BaseModel::load(Path::new(&gguf), DType::F32, &Device::Cpu).unwrap();
    let (format, bytes) = base.quantized_summary().unwrap();
    let weights: usize = base.quantized.values().map(|q| q.rows * q.cols).sum();
    assert_eq!(
        base.quantized.len(),
        30 * 7 + 1,
        "every projection of the 30 layers and the embedding"
    );
    assert_eq!(format, "Q4_1+Q8_0");
    let embed = &base.quantized[&base.config.embed_name()];
    assert_eq!((embed.format(), embed.rows), ("Q8_0", 49152));
    assert!(
        (bytes as f64) < weights as f64 * 4.0 / 5.0,
        "{bytes} bytes for {weights} weights"
    );
    let ex = examples(base.config.vocab_size);
    for executor in [Executor::CpuEngine, Executor::Graph] {
        assert_same_model("smollm2 Q4_1", &base, executor, &ex);
    }
    let dense = decoded(&base, DType::F32);
    // Generation: the prompt's rows, then a row per token through the head's few-row product.
    let prompts = vec![ex[0].input_ids.clone(), ex[1].input_ids.clone()];
    let greedy = dn_train::SamplingOptions::greedy(12, Vec::new());
    let complete = |b: &BaseModel| {
        let model = LoraModel::new(b, &LoraConfig::new(4, 8.0), 7).unwrap();
        dn_train::generate(&model, &prompts, &greedy, &mut |_, _| true).unwrap()
    };
    let (kept, plain) = (complete(&base), complete(&dense));
    for (k, p) in kept.iter().zip(&plain) {
        assert_eq!(k.tokens, p.tokens);
        assert_eq!(k.tokens.len(), 12);
    }
}
