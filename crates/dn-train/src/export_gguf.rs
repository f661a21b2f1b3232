//! A base model with a LoRA adapter merged in, written as a llama.cpp GGUF file: the architecture's
//! metadata keys, the tokenizer and chat template (dn_model::gguf_vocab), the tensors in llama.cpp's
//! names and layout (q/k rows permuted for llama) in f32, f16, bf16 or q8_0 (norms stay f32). Written for
//! llama, qwen2 and qwen3 models with plain rope and full attention, and qwen3_moe ones as llama.cpp's
//! `qwen3moe` computes them (every layer sparse, top-k renormalised: the router as `ffn_gate_inp`, the
//! experts' gate_up split into `ffn_gate_exps` and `ffn_up_exps`, `ffn_down_exps`); anything else is
//! refused by name.

use std::path::Path;

use candle_core::{DType, Device};
use dn_arch::{Family, RopeKind};
use dn_model::gguf_write::{KvValue, TensorSpec, TensorType, write_gguf};
use dn_model::weights::{gguf_name, permute_rows};

use crate::error::{Error, Result};
use crate::export::{export_error, merged_tensors, stored_dtype};
use crate::weights::BaseModel;

/// What [`export_gguf`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufSummary {
    pub tensors: usize,
    pub merged: usize,
    pub bytes: u64,
}

/// One GGUF tensor: its name, the merged tensor it is written from, and the rows of that tensor's second
/// dimension it takes (the experts' gate_up `[experts, 2 * intermediate, hidden]` is two GGUF tensors).
struct Source {
    gguf: String,
    index: usize,
    rows: Option<(usize, usize)>,
}

/// The GGUF tensors of transformers tensor `name` (`None`: it has no llama.cpp name).
fn sources(name: &str, index: usize, shape: &[usize]) -> Option<Vec<Source>> {
    if let Some(block) = name.strip_suffix(".mlp.experts.gate_up_proj") {
        let layer = block.strip_prefix("model.layers.")?;
        let half = shape[1] / 2;
        let part = |kind: &str, start| Source {
            gguf: format!("blk.{layer}.ffn_{kind}_exps.weight"),
            index,
            rows: Some((start, half)),
        };
        return Some(vec![part("gate", 0), part("up", half)]);
    }
    Some(vec![Source {
        gguf: gguf_name(name)?,
        index,
        rows: None,
    }])
}

/// What llama.cpp's `qwen3moe` needs of a mixture of experts, or why this one is not that model.
fn check_qwen3moe(c: &dn_arch::ModelConfig) -> std::result::Result<Vec<(String, KvValue)>, String> {
    let e = c.experts.ok_or("no experts")?;
    if c.layers.iter().any(|l| !l.sparse) {
        return Err(
            "it has dense layers between its sparse ones (mlp_only_layers or \
                    decoder_sparse_step); llama.cpp's qwen3moe has every layer sparse"
                .into(),
        );
    }
    if !e.normalize_top_k {
        return Err(
            "its router's top-k weights are not renormalised (norm_topk_prob false); \
                    llama.cpp's qwen3moe always renormalises them, a different model"
                .into(),
        );
    }
    let key = |k: &str| format!("qwen3moe.{k}");
    Ok(vec![
        (key("expert_count"), KvValue::U32(e.count as u32)),
        (key("expert_used_count"), KvValue::U32(e.top_k as u32)),
        (
            key("expert_feed_forward_length"),
            KvValue::U32(e.intermediate_size as u32),
        ),
    ])
}

/// Block order: the embedding, each block's tensors, then the final norm and head.
fn order(name: &str) -> (usize, usize, String) {
    match name.strip_prefix("blk.") {
        Some(rest) => {
            let (layer, part) = rest.split_once('.').unwrap_or((rest, ""));
            (1, layer.parse().unwrap_or(0), part.to_owned())
        }
        None if name.starts_with("token_embd") => (0, 0, name.to_owned()),
        None => (2, 0, name.to_owned()),
    }
}

/// Writes the model directory `base_dir` with the adapter in `adapter` merged in to the GGUF file `out`
/// (matrices in `kind`; q8_0 falls back to f16 for a matrix whose rows are not a multiple of 32).
pub fn export_gguf(
    base_dir: &Path,
    adapter: &Path,
    out: &Path,
    kind: TensorType,
) -> Result<GgufSummary> {
    if out.exists() {
        return Err(export_error(out, "already exists: choose a new file"));
    }
    // Loaded as stored (a bf16 base stays bf16 in memory); each tensor is widened to f32 when written.
    let base = BaseModel::load(base_dir, stored_dtype(base_dir)?, &Device::Cpu)?;
    let c = base.config.clone();
    let refuse = |what: String| export_error(base_dir, format!("GGUF export: {what}"));
    let (arch, expert_kv) = match c.family {
        Family::Llama => ("llama", Vec::new()),
        Family::Qwen2 => ("qwen2", Vec::new()),
        Family::Qwen3 => ("qwen3", Vec::new()),
        Family::Qwen3Moe => (
            "qwen3moe",
            check_qwen3moe(&c).map_err(|why| refuse(format!("this qwen3_moe model: {why}")))?,
        ),
        other => {
            return Err(refuse(format!(
                "{other} models are not written yet (llama, qwen2, qwen3 and qwen3_moe are; use the \
                 merged model directory with llama.cpp's convert_hf_to_gguf.py)"
            )));
        }
    };
    if c.prefix != "model." {
        return Err(refuse("a multimodal checkpoint".into()));
    }
    if c.ropes.len() != 1
        || !matches!(c.ropes[0].kind, RopeKind::Default)
        || c.ropes[0].rotary_dim != c.head_dim
    {
        return Err(refuse(
            "its rope scaling or partial rotary dimensions are not written yet".into(),
        ));
    }
    if c.layers.iter().any(|l| l.window.is_some()) {
        return Err(refuse(
            "sliding-window attention has no GGUF form for this architecture".into(),
        ));
    }
    let (tensors, merged) = merged_tensors(&base, adapter, DType::F32)?;
    let mut named: Vec<Source> = Vec::with_capacity(tensors.len());
    for (i, (name, merged)) in tensors.iter().enumerate() {
        let found = sources(name, i, merged.base.dims())
            .ok_or_else(|| refuse(format!("tensor {name} has no llama.cpp name")))?;
        named.extend(found);
    }
    named.sort_by_key(|s| order(&s.gguf));
    let specs: Vec<TensorSpec> = named
        .iter()
        .map(|source| {
            let mut shape = tensors[source.index].1.base.dims().to_vec();
            if let Some((_, rows)) = source.rows {
                shape[1] = rows;
            }
            let matrix_kind = match kind {
                TensorType::Q8_0 if shape.last().is_some_and(|c| c % 32 != 0) => TensorType::F16,
                other => other,
            };
            TensorSpec {
                name: source.gguf.clone(),
                // Matrices and the experts' stacked matrices; norms stay f32.
                kind: if shape.len() >= 2 {
                    matrix_kind
                } else {
                    TensorType::F32
                },
                shape,
            }
        })
        .collect();
    let key = |k: &str| format!("{arch}.{k}");
    let name = base_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    let mut kv = vec![
        ("general.architecture".to_owned(), KvValue::Str(arch.into())),
        ("general.name".to_owned(), KvValue::Str(name)),
        (
            "general.file_type".to_owned(),
            KvValue::U32(kind.file_type()),
        ),
        (
            key("context_length"),
            KvValue::U32(c.max_position_embeddings as u32),
        ),
        (key("embedding_length"), KvValue::U32(c.hidden_size as u32)),
        (key("block_count"), KvValue::U32(c.num_hidden_layers as u32)),
        (
            key("feed_forward_length"),
            KvValue::U32(c.intermediate_size as u32),
        ),
        (
            key("attention.head_count"),
            KvValue::U32(c.num_attention_heads as u32),
        ),
        (
            key("attention.head_count_kv"),
            KvValue::U32(c.num_key_value_heads as u32),
        ),
        (key("attention.key_length"), KvValue::U32(c.head_dim as u32)),
        (
            key("attention.value_length"),
            KvValue::U32(c.head_dim as u32),
        ),
        (key("rope.freq_base"), KvValue::F32(c.ropes[0].theta as f32)),
        (key("rope.dimension_count"), KvValue::U32(c.head_dim as u32)),
        (
            key("attention.layer_norm_rms_epsilon"),
            KvValue::F32(c.rms_norm_eps as f32),
        ),
        (key("vocab_size"), KvValue::U32(c.vocab_size as u32)),
    ];
    kv.extend(expert_kv);
    kv.extend(
        dn_model::gguf_vocab::tokenizer_kv(base_dir, c.vocab_size)
            .map_err(|e| refuse(e.to_string()))?,
    );
    let permuted = arch == "llama";
    let bytes = write_gguf(out, &kv, &specs, &mut |k| {
        let Source { gguf, index, rows } = &named[k];
        let value = tensors[*index]
            .1
            .value()
            .and_then(|t| match rows {
                Some((start, len)) => t.narrow(1, *start, *len),
                None => Ok(t),
            })
            .and_then(|t| t.flatten_all()?.to_vec1::<f32>())
            .map_err(|e| dn_model::Error::Model {
                path: gguf.clone(),
                message: e.to_string(),
            })?;
        let shape = &specs[k].shape;
        let heads = if gguf.ends_with("attn_q.weight") {
            Some(c.num_attention_heads)
        } else if gguf.ends_with("attn_k.weight") {
            Some(c.num_key_value_heads)
        } else {
            None
        };
        Ok(match heads {
            Some(heads) if permuted => permute_rows(&value, shape[0], shape[1], heads),
            _ => value,
        })
    })
    .map_err(|dn_model::Error::Model { path, message }| Error::model(path, message))?;
    Ok(GgufSummary {
        tensors: specs.len(),
        merged,
        bytes,
    })
}
