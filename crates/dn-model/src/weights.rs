//! GGUF tensors -> f32 in Hugging Face layout: dequantization (`crate::ggml`: F32, F16, BF16, Q4_0, Q4_1,
//! Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K), the llama.cpp
//! tensor names of the architectures dn trains from GGUF (llama, qwen2, qwen3) mapped to transformers'
//! names, and, for llama, q/k rows un-permuted back from llama.cpp's rope layout (as transformers'
//! `reverse_permute_weights` does; llama.cpp keeps Qwen's rows as they are).

use crate::error::{Error, Result};
use crate::ggml::GgmlType;
use crate::gguf::{GgufMetadata, TensorInfo};

fn unsupported(name: &str, message: String) -> Error {
    Error::Model {
        path: name.to_owned(),
        message,
    }
}

/// A tensor's ggml type, if dn reads it.
fn ggml_type(info: &TensorInfo) -> Result<GgmlType> {
    GgmlType::of(info.kind).ok_or_else(|| {
        unsupported(
            &info.name,
            format!(
                "ggml type {} cannot be read yet ({} can)",
                info.kind,
                GgmlType::names()
            ),
        )
    })
}

/// Bytes of one tensor's data for its ggml type.
pub fn tensor_bytes(info: &TensorInfo) -> Result<usize> {
    let kind = ggml_type(info)?;
    let n = info.elements() as usize;
    kind.size_of(n).ok_or_else(|| {
        unsupported(
            &info.name,
            format!(
                "{n} elements is not a whole number of {} blocks of {}",
                kind.name, kind.block
            ),
        )
    })
}

/// Dequantizes one tensor's bytes (exactly [`tensor_bytes`] long) to f32.
pub fn dequantize(info: &TensorInfo, bytes: &[u8]) -> Result<Vec<f32>> {
    let expected = tensor_bytes(info)?;
    if bytes.len() != expected {
        return Err(unsupported(
            &info.name,
            format!("{} bytes of data, expected {expected}", bytes.len()),
        ));
    }
    let mut out = vec![0.0; info.elements() as usize];
    ggml_type(info)?.dequantize(bytes, &mut out);
    Ok(out)
}

/// The GGUF architectures whose tensors map to transformers names here.
pub const GGUF_ARCHITECTURES: [&str; 4] = ["llama", "qwen2", "qwen3", "qwen3moe"];

/// llama.cpp's names of a block's tensors and transformers' (after `model.layers.N.`).
const BLOCK_NAMES: [(&str, &str); 16] = [
    ("attn_q.weight", "self_attn.q_proj.weight"),
    ("attn_k.weight", "self_attn.k_proj.weight"),
    ("attn_v.weight", "self_attn.v_proj.weight"),
    ("attn_q.bias", "self_attn.q_proj.bias"),
    ("attn_k.bias", "self_attn.k_proj.bias"),
    ("attn_v.bias", "self_attn.v_proj.bias"),
    ("attn_q_norm.weight", "self_attn.q_norm.weight"),
    ("attn_k_norm.weight", "self_attn.k_norm.weight"),
    ("attn_output.weight", "self_attn.o_proj.weight"),
    ("ffn_gate.weight", "mlp.gate_proj.weight"),
    ("ffn_up.weight", "mlp.up_proj.weight"),
    ("ffn_down.weight", "mlp.down_proj.weight"),
    ("attn_norm.weight", "input_layernorm.weight"),
    ("ffn_norm.weight", "post_attention_layernorm.weight"),
    // qwen3moe's router and experts' down_proj (gate_up is split in two: dn_train's GGUF export).
    ("ffn_gate_inp.weight", "mlp.gate.weight"),
    ("ffn_down_exps.weight", "mlp.experts.down_proj"),
];

/// llama.cpp's names of the tensors outside the blocks and transformers'.
const FIXED_NAMES: [(&str, &str); 3] = [
    ("token_embd.weight", "model.embed_tokens.weight"),
    ("output_norm.weight", "model.norm.weight"),
    ("output.weight", "lm_head.weight"),
];

/// The transformers name of a llama.cpp tensor, if it is one of a llama, qwen2 or qwen3 model's.
pub fn hf_name(gguf_name: &str) -> Option<String> {
    if let Some((_, hf)) = FIXED_NAMES.iter().find(|(g, _)| *g == gguf_name) {
        return Some((*hf).to_owned());
    }
    let rest = gguf_name.strip_prefix("blk.")?;
    let (layer, part) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (_, module) = BLOCK_NAMES.iter().find(|(g, _)| *g == part)?;
    Some(format!("model.layers.{layer}.{module}"))
}

/// The llama.cpp name of a transformers tensor of a llama, qwen2, qwen3 or qwen3_moe model (the inverse
/// of [`hf_name`]; the experts' fused gate_up is two GGUF tensors: see [`hf_tensors`]).
pub fn gguf_name(hf_name: &str) -> Option<String> {
    if let Some((gguf, _)) = FIXED_NAMES.iter().find(|(_, h)| *h == hf_name) {
        return Some((*gguf).to_owned());
    }
    let rest = hf_name.strip_prefix("model.layers.")?;
    let (layer, part) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (gguf, _) = BLOCK_NAMES.iter().find(|(_, h)| *h == part)?;
    Some(format!("blk.{layer}.{gguf}"))
}

/// llama.cpp's q/k row permutation for llama (the inverse of [`unpermute_rows`]): row
/// `h*hd + a*(hd/2) + d` goes to `h*hd + d*2 + a`.
pub fn permute_rows(values: &[f32], rows: usize, cols: usize, heads: usize) -> Vec<f32> {
    move_rows(values, rows, cols, heads, true)
}

/// Undoes llama.cpp's q/k row permutation: row `h*hd + d*2 + a` goes back to `h*hd + a*(hd/2) + d`
/// (rows of `cols` values of any kind: f32s, or a quantized row's bytes).
pub fn unpermute_rows<T: Copy + Default>(
    values: &[T],
    rows: usize,
    cols: usize,
    heads: usize,
) -> Vec<T> {
    move_rows(values, rows, cols, heads, false)
}

/// Moves each head's rows between transformers' halves layout (`a*(hd/2) + d`) and llama.cpp's
/// interleaved one (`d*2 + a`): towards llama.cpp when `interleave`, back otherwise.
fn move_rows<T: Copy + Default>(
    values: &[T],
    rows: usize,
    cols: usize,
    heads: usize,
    interleave: bool,
) -> Vec<T> {
    let head_dim = rows / heads;
    let half = head_dim / 2;
    let mut out = vec![T::default(); values.len()];
    for h in 0..heads {
        for d in 0..half {
            for a in 0..2 {
                let halves = h * head_dim + a * half + d;
                let interleaved = h * head_dim + d * 2 + a;
                let (from, to) = if interleave {
                    (halves, interleaved)
                } else {
                    (interleaved, halves)
                };
                out[to * cols..(to + 1) * cols]
                    .copy_from_slice(&values[from * cols..(from + 1) * cols]);
            }
        }
    }
    out
}

/// One tensor in HF layout: name, PyTorch shape, f32 values.
pub struct HfTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

/// One matrix kept in its ggml block type: name, `[rows, cols]`, each row `cols / block` blocks (q/k
/// rows of a llama file already back in transformers' order).
pub struct RawTensor {
    pub name: String,
    pub kind: GgmlType,
    pub rows: usize,
    pub cols: usize,
    pub bytes: Vec<u8>,
}

/// The file's architecture, if its tensors map to transformers names here.
pub fn gguf_architecture<'m>(meta: &'m GgufMetadata, file: &str) -> Result<&'m str> {
    let arch = meta.str("general.architecture").unwrap_or("");
    if !GGUF_ARCHITECTURES.contains(&arch) {
        return Err(unsupported(
            file,
            format!(
                "GGUF architecture {arch:?} cannot be read yet ({} can; or use the model directory)",
                GGUF_ARCHITECTURES.join(", ")
            ),
        ));
    }
    Ok(arch)
}

/// llama.cpp keeps a mixture's gate and up projections apart (`blk.N.ffn_gate_exps`, `ffn_up_exps`, each
/// `[experts, intermediate, hidden]`); transformers 5 holds them fused, gate rows first per expert.
fn split_expert_half(gguf_name: &str) -> Option<(usize, bool)> {
    let rest = gguf_name.strip_prefix("blk.")?;
    let (layer, part) = rest.split_once('.')?;
    let up = match part {
        "ffn_gate_exps.weight" => false,
        "ffn_up_exps.weight" => true,
        _ => return None,
    };
    Some((layer.parse().ok()?, up))
}

/// `model.layers.{layer}.mlp.experts.gate_up_proj` from its gate and up halves.
fn fuse_gate_up(layer: usize, gate: HfTensor, up: HfTensor, file: &str) -> Result<HfTensor> {
    if gate.shape != up.shape || gate.shape.len() != 3 {
        return Err(unsupported(
            file,
            format!(
                "blk.{layer}: ffn_gate_exps {:?} and ffn_up_exps {:?} are not two [experts, intermediate, hidden] halves",
                gate.shape, up.shape
            ),
        ));
    }
    let (experts, rows, cols) = (gate.shape[0], gate.shape[1], gate.shape[2]);
    let block = rows * cols;
    let mut values = Vec::with_capacity(2 * experts * block);
    for e in 0..experts {
        values.extend_from_slice(&gate.values[e * block..(e + 1) * block]);
        values.extend_from_slice(&up.values[e * block..(e + 1) * block]);
    }
    Ok(HfTensor {
        name: format!("model.layers.{layer}.mlp.experts.gate_up_proj"),
        shape: vec![experts, 2 * rows, cols],
        values,
    })
}

/// Every tensor of a GGUF file (read from `data`, the whole file) in HF layout.
pub fn hf_tensors(meta: &GgufMetadata, data: &[u8], file: &str) -> Result<Vec<HfTensor>> {
    Ok(hf_tensors_keeping(meta, data, file, &|_| false)?.0)
}

/// [`hf_tensors`], except that the block-quantized matrices whose transformers name `keep` accepts stay in
/// their ggml type ([`RawTensor`]).
pub fn hf_tensors_keeping(
    meta: &GgufMetadata,
    data: &[u8],
    file: &str,
    keep: &dyn Fn(&str) -> bool,
) -> Result<(Vec<HfTensor>, Vec<RawTensor>)> {
    let mut raw = Vec::new();
    let permuted = gguf_architecture(meta, file)? == "llama";
    let heads = meta.arch_u64("attention.head_count").unwrap_or(1) as usize;
    let kv_heads = meta
        .arch_u64("attention.head_count_kv")
        .map_or(heads, |v| v as usize);
    let mut tensors = Vec::new();
    let mut halves: std::collections::BTreeMap<usize, [Option<HfTensor>; 2]> = Default::default();
    for info in &meta.tensors {
        if info.name == "rope_freqs.weight" {
            return Err(unsupported(
                file,
                "Llama-3 rope scaling stored as rope_freqs cannot be read from a GGUF yet; use the model directory"
                    .into(),
            ));
        }
        let half = split_expert_half(&info.name);
        let Some(name) = hf_name(&info.name).or(half.map(|_| String::new())) else {
            return Err(unsupported(
                file,
                format!("tensor {} has no transformers name", info.name),
            ));
        };
        let start = (meta.data_offset + info.offset) as usize;
        let end = start + tensor_bytes(info)?;
        let bytes = data.get(start..end).ok_or_else(|| {
            unsupported(
                file,
                format!("tensor {} lies past the end of the file", info.name),
            )
        })?;
        let shape: Vec<usize> = info.dims.iter().rev().map(|d| *d as usize).collect();
        let kind = ggml_type(info)?;
        if kind.block > 1 && shape.len() == 2 && half.is_none() && keep(&name) {
            let (rows, cols) = (shape[0], shape[1]);
            let row_bytes = bytes.len() / rows.max(1);
            let heads = if !permuted {
                None
            } else if info.name.ends_with("attn_q.weight") {
                Some(heads)
            } else if info.name.ends_with("attn_k.weight") {
                Some(kv_heads)
            } else {
                None
            };
            let bytes = match heads {
                Some(heads) => unpermute_rows(bytes, rows, row_bytes, heads),
                None => bytes.to_vec(),
            };
            raw.push(RawTensor {
                name,
                kind,
                rows,
                cols,
                bytes,
            });
            continue;
        }
        let mut values = dequantize(info, bytes)?;
        if permuted && shape.len() == 2 {
            if info.name.ends_with("attn_q.weight") {
                values = unpermute_rows(&values, shape[0], shape[1], heads);
            } else if info.name.ends_with("attn_k.weight") {
                values = unpermute_rows(&values, shape[0], shape[1], kv_heads);
            }
        }
        let tensor = HfTensor {
            name,
            shape,
            values,
        };
        match half {
            Some((layer, up)) => halves.entry(layer).or_default()[usize::from(up)] = Some(tensor),
            None => tensors.push(tensor),
        }
    }
    for (layer, [gate, up]) in halves {
        let (Some(gate), Some(up)) = (gate, up) else {
            return Err(unsupported(
                file,
                format!("blk.{layer} has one of ffn_gate_exps and ffn_up_exps without the other"),
            ));
        };
        tensors.push(fuse_gate_up(layer, gate, up, file)?);
    }
    Ok((tensors, raw))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_permutations_invert() {
        for name in [
            "token_embd.weight",
            "output.weight",
            "blk.3.attn_q.weight",
            "blk.0.ffn_norm.weight",
        ] {
            assert_eq!(gguf_name(&hf_name(name).unwrap()).as_deref(), Some(name));
        }
        assert_eq!(
            gguf_name("model.layers.2.mlp.up_proj.weight").as_deref(),
            Some("blk.2.ffn_up.weight")
        );
        assert_eq!(gguf_name("model.vision.x"), None);
        let values: Vec<f32> = (0..8 * 3).map(|v| v as f32).collect();
        let permuted = permute_rows(&values, 8, 3, 2);
        assert_ne!(permuted, values);
        assert_eq!(unpermute_rows(&permuted, 8, 3, 2), values);
    }
}
