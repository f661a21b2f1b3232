//! `dn model import FILE.gguf --out DIR`: a GGUF Llama model written in the Hugging Face layout
//! (dequantized `model.safetensors` in f32, `config.json`, `tokenizer.json`, `tokenizer_config.json`,
//! `generation_config.json`), so the same model can be used as a GGUF or as a model directory.

use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::{Dtype, TensorView};
use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::gguf::GgufMetadata;
use crate::gguf_tokenizer::tokenizer_from_gguf;
use crate::weights::{gguf_architecture, hf_tensors};

/// What an import wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportSummary {
    pub tensors: usize,
    pub parameters: u64,
}

fn model_error(path: &Path, message: impl Into<String>) -> Error {
    Error::Model {
        path: path.display().to_string(),
        message: message.into(),
    }
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).map_err(|e| model_error(path, format!("cannot write: {e}")))
}

/// The transformers `config.json` of a GGUF model of one of the architectures in
/// [`crate::weights::GGUF_ARCHITECTURES`]: its dimensions, rope
/// and special tokens, read from the architecture's metadata keys.
///
/// The vocabulary is the token embedding's rows (what the weights hold, as transformers reads them), and
/// the head is tied when the file has no `output.weight`.
pub fn hf_config(meta: &GgufMetadata, file: &str) -> Result<Value> {
    let arch = gguf_architecture(meta, file)?;
    let tied = !meta.tensors.iter().any(|t| t.name == "output.weight");
    let vocab_size = meta
        .tensors
        .iter()
        .find(|t| t.name == "token_embd.weight")
        .and_then(|t| t.dims.get(1).copied())
        .ok_or_else(|| Error::Model {
            path: file.to_owned(),
            message: "no token embedding tensor (token_embd.weight)".into(),
        })?;
    let key = |k: &str| format!("{arch}.{k}");
    let int = |k: &str| meta.u64(&key(k));
    let float = |k: &str| meta.get(&key(k)).and_then(|v| v.as_f64());
    let heads = int("attention.head_count").unwrap_or(1);
    let hidden = int("embedding_length").unwrap_or(0);
    let head_dim = int("attention.key_length")
        .or(int("rope.dimension_count"))
        .unwrap_or(hidden / heads.max(1));
    let rope_scaling = match meta.str(&key("rope.scaling.type")) {
        None | Some("none") => Value::Null,
        Some(kind @ ("linear" | "yarn")) => {
            let mut s = json!({"rope_type": kind, "factor": float("rope.scaling.factor")});
            if let Some(original) = int("rope.scaling.original_context_length") {
                s["original_max_position_embeddings"] = json!(original);
            }
            s
        }
        Some(other) => {
            return Err(Error::Model {
                path: file.to_owned(),
                message: format!(
                    "{arch}.rope.scaling.type {other:?} cannot be read yet (linear and yarn can)"
                ),
            });
        }
    };
    let (class, model_type) = match arch {
        "qwen2" => ("Qwen2ForCausalLM", "qwen2"),
        "qwen3" => ("Qwen3ForCausalLM", "qwen3"),
        "qwen3moe" => ("Qwen3MoeForCausalLM", "qwen3_moe"),
        _ => ("LlamaForCausalLM", "llama"),
    };
    let mut config = json!({
        "architectures": [class],
        "model_type": model_type,
        "hidden_size": hidden,
        "intermediate_size": int("feed_forward_length"),
        "num_hidden_layers": int("block_count"),
        "num_attention_heads": heads,
        "num_key_value_heads": int("attention.head_count_kv").unwrap_or(heads),
        "head_dim": head_dim,
        "max_position_embeddings": int("context_length"),
        "rms_norm_eps": float("attention.layer_norm_rms_epsilon").map(|e| (e as f32) as f64),
        "rope_theta": float("rope.freq_base").unwrap_or(10000.0),
        "rope_scaling": rope_scaling,
        "vocab_size": vocab_size,
        "tie_word_embeddings": tied,
        "hidden_act": "silu",
        "bos_token_id": meta.u64("tokenizer.ggml.bos_token_id"),
        "eos_token_id": meta.u64("tokenizer.ggml.eos_token_id"),
        "pad_token_id": meta.u64("tokenizer.ggml.padding_token_id"),
        "torch_dtype": "float32",
    });
    if arch == "qwen3moe" {
        // llama.cpp's qwen3moe: every layer sparse, the top-k weights renormalised.
        let experts = json!({
            "num_experts": int("expert_count"),
            "num_experts_per_tok": int("expert_used_count"),
            "moe_intermediate_size": int("expert_feed_forward_length"),
            "norm_topk_prob": true,
            "decoder_sparse_step": 1,
            "mlp_only_layers": [],
        });
        if let (Some(config), Some(experts)) = (config.as_object_mut(), experts.as_object()) {
            config.extend(experts.clone());
        }
    }
    Ok(config)
}

pub fn import_gguf(gguf: &Path, out: &Path) -> Result<ImportSummary> {
    let meta = GgufMetadata::read(gguf)?;
    let name = gguf.display().to_string();
    gguf_architecture(&meta, &name)?;
    if meta.tensors.iter().any(|t| t.name == "rope_freqs.weight") {
        return Err(model_error(
            gguf,
            "Llama-3 rope scaling (rope_freqs) cannot be imported yet",
        ));
    }
    let data = std::fs::read(gguf).map_err(|e| model_error(gguf, format!("cannot read: {e}")))?;
    let tensors = hf_tensors(&meta, &data, &name)?;
    drop(data);
    let tokenizer = tokenizer_from_gguf(&meta, &name)?;

    std::fs::create_dir_all(out).map_err(|e| model_error(out, format!("cannot create: {e}")))?;
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|t| t.values.iter().flat_map(|v| v.to_le_bytes()).collect())
        .collect();
    let views = tensors
        .iter()
        .zip(&bytes)
        .map(|(t, b)| {
            TensorView::new(Dtype::F32, t.shape.clone(), b)
                .map(|view| (t.name.clone(), view))
                .map_err(|e| model_error(gguf, format!("tensor {}: {e}", t.name)))
        })
        .collect::<Result<Vec<_>>>()?;
    let metadata = HashMap::from([("format".to_owned(), "pt".to_owned())]);
    // Written under a temporary name and renamed, so a half-written file never looks complete.
    let partial = out.join("model.safetensors.partial");
    safetensors::serialize_to_file(views, Some(metadata), &partial)
        .map_err(|e| model_error(&partial, format!("cannot write: {e}")))?;
    std::fs::rename(&partial, out.join("model.safetensors"))
        .map_err(|e| model_error(out, format!("cannot rename model.safetensors: {e}")))?;

    let config = hf_config(&meta, &name)?;
    write(
        &out.join("config.json"),
        serde_json::to_string_pretty(&config)
            .expect("json")
            .as_bytes(),
    )?;
    tokenizer
        .save(out.join("tokenizer.json"), false)
        .map_err(|e| model_error(out, format!("cannot write tokenizer.json: {e}")))?;
    let token = |key: &str| {
        meta.u64(key)
            .and_then(|id| tokenizer.id_to_token(id as u32))
    };
    let tokenizer_config = json!({
        "chat_template": meta.str("tokenizer.chat_template"),
        "bos_token": token("tokenizer.ggml.bos_token_id"),
        "eos_token": token("tokenizer.ggml.eos_token_id"),
        "pad_token": token("tokenizer.ggml.padding_token_id"),
        "unk_token": token("tokenizer.ggml.unknown_token_id"),
        "add_bos_token": meta.get("tokenizer.ggml.add_bos_token").and_then(|v| v.as_bool()).unwrap_or(false),
        "model_max_length": meta.arch_u64("context_length"),
        "tokenizer_class": "PreTrainedTokenizerFast",
    });
    write(
        &out.join("tokenizer_config.json"),
        serde_json::to_string_pretty(&tokenizer_config)
            .expect("json")
            .as_bytes(),
    )?;
    let generation = json!({
        "bos_token_id": meta.u64("tokenizer.ggml.bos_token_id"),
        "eos_token_id": meta.u64("tokenizer.ggml.eos_token_id"),
    });
    write(
        &out.join("generation_config.json"),
        serde_json::to_string_pretty(&generation)
            .expect("json")
            .as_bytes(),
    )?;
    Ok(ImportSummary {
        tensors: tensors.len(),
        parameters: tensors.iter().map(|t| t.values.len() as u64).sum(),
    })
}
