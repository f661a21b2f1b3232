//! A base model with a LoRA adapter merged into its weights (`W + (alpha / r) B A`), written as a Hugging
//! Face model directory: the base's config.json (its dtype updated), safetensors shards of at most
//! `max_shard_bytes` with an index when there are several, and the tokenizer, chat template and generation
//! files copied. Each output tensor is computed when its bytes are written: memory stays at the loaded
//! base plus one merged tensor.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use safetensors::{Dtype, View};
use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::lora::LoraPair;
use crate::model::LoraModel;
use crate::weights::{BaseModel, StoredExperts};

/// Files of the base's directory copied as they are.
const COPIED: [&str; 5] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "generation_config.json",
    "special_tokens_map.json",
];

/// Shards at most this large unless asked otherwise (transformers' default for pushes).
pub const MAX_SHARD_BYTES: u64 = 5_000_000_000;

/// The dtype a model directory's weights are stored in, as its config.json says (`dtype`, or the older
/// `torch_dtype`): bf16, f16, or else f32.
pub fn stored_dtype(dir: &Path) -> Result<DType> {
    let config = dn_model::model_files::read_json(&dir.join("config.json"))
        .map_err(|e| export_error(dir, e))?;
    let stored = ["dtype", "torch_dtype"]
        .iter()
        .find_map(|k| config.get(*k).and_then(Value::as_str));
    Ok(match stored {
        Some("bfloat16") => DType::BF16,
        Some("float16") => DType::F16,
        _ => DType::F32,
    })
}

/// What [`merge_adapter`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct MergeSummary {
    pub tensors: usize,
    /// Projections that had a LoRA pair.
    pub merged: usize,
    pub shards: Vec<PathBuf>,
    pub bytes: u64,
}

pub(crate) fn export_error(path: &Path, message: impl Into<String>) -> Error {
    Error::Export {
        path: path.display().to_string(),
        message: message.into(),
    }
}

/// The name transformers gives a dtype in config.json.
fn dtype_name(dtype: DType) -> Result<&'static str> {
    match dtype {
        DType::F32 => Ok("float32"),
        DType::BF16 => Ok("bfloat16"),
        DType::F16 => Ok("float16"),
        other => Err(Error::invalid(
            "dtype",
            format!("{other:?}: merged weights are written as f32, bf16 or f16"),
        )),
    }
}

/// A LoRA pair to fold in: `scale * B A`, or one per expert of a fused `[experts, out, in]` tensor.
#[derive(Clone)]
struct Delta {
    a: Tensor,
    b: Tensor,
    scale: f64,
    experts: usize,
}

impl Delta {
    fn of(pair: &LoraPair) -> Self {
        Delta {
            a: pair.a.as_tensor().clone(),
            b: pair.b.as_tensor().clone(),
            scale: pair.scale,
            experts: pair.experts,
        }
    }

    /// Expert `e`'s `scale * B_e A_e` in f32 (`e` 0 of a plain pair: `scale * B A`).
    fn of_expert(&self, e: usize) -> candle_core::Result<Tensor> {
        let r = self.a.dim(0)? / self.experts;
        let out = self.b.dim(0)?;
        let a = self.a.narrow(0, e * r, r)?.to_dtype(DType::F32)?;
        let b = self.b.reshape((out, r, self.experts))?.narrow(2, e, 1)?;
        let b = b.squeeze(2)?.to_dtype(DType::F32)?;
        b.matmul(&a)? * self.scale
    }
}

/// Rows `rows` of expert `expert` of a fused `[experts, out, in]` tensor: one expert's weight in the
/// per-expert layout (gate and up are the two halves of gate_up).
#[derive(Clone)]
struct Part {
    expert: usize,
    rows: std::ops::Range<usize>,
}

/// One output tensor: a base weight (or a part of a fused expert tensor), with its LoRA pair folded in
/// when it has one.
#[derive(Clone)]
pub(crate) struct Merged {
    pub(crate) base: Tensor,
    delta: Option<Delta>,
    part: Option<Part>,
    /// Written as `[experts, in, out]` (gpt-oss's layout) rather than held `[experts, out, in]`.
    transposed: bool,
    shape: Vec<usize>,
    dtype: DType,
}

impl Merged {
    fn new(base: Tensor, delta: Option<Delta>, dtype: DType) -> Self {
        Merged {
            shape: base.dims().to_vec(),
            base,
            delta,
            part: None,
            transposed: false,
            dtype,
        }
    }

    /// This fused `[experts, out, in]` tensor written as `[experts, in, out]`.
    fn transposed(self) -> Self {
        let shape = vec![self.shape[0], self.shape[2], self.shape[1]];
        Merged {
            transposed: true,
            shape,
            ..self
        }
    }

    /// Expert `expert`'s rows `rows` of this fused tensor.
    fn part(&self, expert: usize, rows: std::ops::Range<usize>) -> Self {
        let shape = vec![rows.len(), self.shape[2]];
        Merged {
            part: Some(Part { expert, rows }),
            shape,
            ..self.clone()
        }
    }

    pub(crate) fn value(&self) -> candle_core::Result<Tensor> {
        let plus = |w: Tensor, e: usize| -> candle_core::Result<Tensor> {
            match &self.delta {
                None => Ok(w),
                Some(d) => w.to_dtype(DType::F32)? + d.of_expert(e)?,
            }
        };
        let merged = match (&self.part, &self.delta) {
            (Some(part), _) => {
                let w = plus(self.base.get(part.expert)?, part.expert)?;
                w.narrow(0, part.rows.start, part.rows.len())?
            }
            (None, None) => self.base.clone(),
            (None, Some(d)) if d.experts > 1 => {
                let experts = (0..d.experts)
                    .map(|e| plus(self.base.get(e)?, e))
                    .collect::<candle_core::Result<Vec<_>>>()?;
                Tensor::stack(&experts, 0)?
            }
            (None, Some(_)) => plus(self.base.clone(), 0)?,
        };
        let merged = if self.transposed {
            merged.transpose(1, 2)?.contiguous()?
        } else {
            merged
        };
        merged.to_dtype(self.dtype)
    }
}

impl View for &Merged {
    fn dtype(&self) -> Dtype {
        match self.dtype {
            DType::BF16 => Dtype::BF16,
            DType::F16 => Dtype::F16,
            _ => Dtype::F32,
        }
    }

    fn shape(&self) -> &[usize] {
        &self.shape
    }

    fn data(&self) -> Cow<'_, [u8]> {
        // The writer asks once per tensor; a failure here has no error channel, and none is expected
        // (shapes were checked when the adapter was loaded).
        let tensor = self
            .value()
            .and_then(|t| t.flatten_all())
            .expect("merged tensor");
        let bytes = match self.dtype {
            DType::BF16 => le_bytes(tensor.to_vec1::<half::bf16>(), half::bf16::to_le_bytes),
            DType::F16 => le_bytes(tensor.to_vec1::<half::f16>(), half::f16::to_le_bytes),
            _ => le_bytes(tensor.to_vec1::<f32>(), f32::to_le_bytes),
        };
        Cow::Owned(bytes)
    }

    fn data_len(&self) -> usize {
        self.shape.iter().product::<usize>() * self.dtype.size_in_bytes()
    }
}

fn le_bytes<T, const N: usize>(
    values: candle_core::Result<Vec<T>>,
    bytes: fn(T) -> [u8; N],
) -> Vec<u8> {
    values
        .expect("values of the tensor's dtype")
        .into_iter()
        .flat_map(bytes)
        .collect()
}

/// Merges the adapter in `adapter` into the model directory `base_dir` and writes the result to `out`
/// (created; must not exist yet) in `dtype`.
pub fn merge_adapter(
    base_dir: &Path,
    adapter: &Path,
    out: &Path,
    dtype: DType,
    max_shard_bytes: u64,
) -> Result<MergeSummary> {
    let dtype_label = dtype_name(dtype)?;
    if !base_dir.is_dir() {
        return Err(export_error(
            base_dir,
            "merging needs the base as a model directory (import a .gguf first: dn model import)",
        ));
    }
    if out.exists() {
        return Err(export_error(out, "already exists: choose a new directory"));
    }
    let base = BaseModel::load(base_dir, dtype, &Device::Cpu)?;
    if base.config.prefix != "model." {
        return Err(export_error(
            base_dir,
            "a multimodal checkpoint: merged export writes text models only",
        ));
    }
    let (tensors, merged) = merged_tensors(&base, adapter, dtype)?;
    // Shards in name order, each as large as the limit allows (a larger tensor alone).
    let mut shards: Vec<Vec<usize>> = vec![Vec::new()];
    let mut size = 0u64;
    for (i, (_, t)) in tensors.iter().enumerate() {
        let len = (&t).data_len() as u64;
        if size > 0 && size + len > max_shard_bytes {
            shards.push(Vec::new());
            size = 0;
        }
        shards.last_mut().expect("one shard").push(i);
        size += len;
    }
    let partial = out.with_extension("partial");
    if partial.exists() {
        std::fs::remove_dir_all(&partial)
            .map_err(|e| export_error(&partial, format!("cannot clear: {e}")))?;
    }
    std::fs::create_dir_all(&partial)
        .map_err(|e| export_error(&partial, format!("cannot create: {e}")))?;
    let count = shards.len();
    let mut weight_map = BTreeMap::new();
    let mut files = Vec::new();
    let mut bytes = 0u64;
    for (s, indices) in shards.iter().enumerate() {
        let file = if count == 1 {
            "model.safetensors".to_owned()
        } else {
            format!("model-{:05}-of-{count:05}.safetensors", s + 1)
        };
        let views: Vec<(&str, &Merged)> = indices
            .iter()
            .map(|&i| (tensors[i].0.as_str(), &tensors[i].1))
            .collect();
        for (name, view) in &views {
            weight_map.insert((*name).to_owned(), Value::from(file.clone()));
            bytes += view.data_len() as u64;
        }
        let metadata = HashMap::from([("format".to_owned(), "pt".to_owned())]);
        let path = partial.join(&file);
        safetensors::serialize_to_file(views, Some(metadata), &path)
            .map_err(|e| export_error(&path, format!("cannot write: {e}")))?;
        files.push(out.join(&file));
    }
    if count > 1 {
        let index = json!({"metadata": {"total_size": bytes}, "weight_map": weight_map});
        write_json(&partial.join("model.safetensors.index.json"), &index)?;
    }
    let config_path = base_dir.join("config.json");
    let mut config =
        dn_model::model_files::read_json(&config_path).map_err(|e| export_error(base_dir, e))?;
    // transformers 5 writes `dtype`, older versions `torch_dtype`: whichever the base has (or the latter).
    let keys: Vec<&str> = ["dtype", "torch_dtype"]
        .into_iter()
        .filter(|k| config.get(*k).is_some())
        .collect();
    for key in if keys.is_empty() {
        vec!["torch_dtype"]
    } else {
        keys
    } {
        config[key] = Value::from(dtype_label);
    }
    // MXFP4 experts and bitsandbytes weights are written decoded, in `dtype`.
    if let Some(object) = config.as_object_mut() {
        object.remove("quantization_config");
    }
    write_json(&partial.join("config.json"), &config)?;
    for name in COPIED {
        let from = base_dir.join(name);
        if from.is_file() {
            std::fs::copy(&from, partial.join(name))
                .map_err(|e| export_error(&from, format!("cannot copy: {e}")))?;
        }
    }
    std::fs::rename(&partial, out).map_err(|e| export_error(out, format!("cannot commit: {e}")))?;
    Ok(MergeSummary {
        tensors: tensors.len(),
        merged,
        shards: files,
        bytes,
    })
}

/// Every tensor of `base` in name order, with the pairs of the adapter in `adapter` folded in (computed
/// when asked for), and how many were.
pub(crate) fn merged_tensors(
    base: &BaseModel,
    adapter: &Path,
    dtype: DType,
) -> Result<(Vec<(String, Merged)>, usize)> {
    let model = LoraModel::with_adapter(base, adapter)?;
    let mut pairs: HashMap<String, Delta> = HashMap::new();
    for (i, block) in model.blocks.iter().enumerate() {
        for pair in block.linears.iter().filter_map(|l| l.lora.as_ref()) {
            pairs.insert(format!("{}.weight", pair.module), Delta::of(pair));
        }
        if let Some(experts) = &block.experts {
            let names = model.config.expert_names(i);
            for (name, pair) in [
                (names.router, &experts.router_lora),
                (names.gate_up, &experts.gate_up_lora),
                (names.down, &experts.down_lora),
            ] {
                if let Some(pair) = pair {
                    pairs.insert(name, Delta::of(pair));
                }
            }
        }
    }
    let merged = pairs.len();
    let mut tensors: Vec<(String, Merged)> = base
        .tensors
        .iter()
        .map(|(name, t)| {
            (
                name.clone(),
                Merged::new(t.clone(), pairs.remove(name), dtype),
            )
        })
        .collect();
    // Weights kept quantized are written decoded, in `dtype` (the merged model is not quantized).
    for name in base.quantized.keys() {
        let decoded = base.dense(name, dtype)?;
        tensors.push((
            name.clone(),
            Merged::new(decoded, pairs.remove(name), dtype),
        ));
    }
    if let Some(stray) = pairs.keys().next() {
        return Err(export_error(
            adapter,
            format!("no base weight {stray} to merge into"),
        ));
    }
    if let Some(stored) = base.stored_experts {
        tensors = per_expert(&base.config, stored, tensors);
    }
    if base.config.experts.is_some_and(|e| e.interleaved) {
        let fused: Vec<String> = (0..base.config.num_hidden_layers)
            .filter(|i| base.config.layers[*i].sparse)
            .flat_map(|i| {
                let names = base.config.expert_names(i);
                [names.gate_up, names.down]
            })
            .collect();
        tensors = tensors
            .into_iter()
            .map(|(name, t)| {
                let t = if fused.contains(&name) {
                    t.transposed()
                } else {
                    t
                };
                (name, t)
            })
            .collect();
    }
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    Ok((tensors, merged))
}

/// The fused experts split back into the layout the checkpoint stored them in (one tensor per expert
/// and projection, the router under the same parent).
fn per_expert(
    config: &dn_arch::ModelConfig,
    stored: StoredExperts,
    tensors: Vec<(String, Merged)>,
) -> Vec<(String, Merged)> {
    let mut by_name: HashMap<String, Merged> = tensors.into_iter().collect();
    let f = config.experts.map_or(0, |e| e.intermediate_size);
    for (i, layer) in config.layers.iter().enumerate() {
        if !layer.sparse {
            continue;
        }
        let names = config.expert_names(i);
        let parent = format!("{}.{}", config.layer_path(i), stored.parent);
        let (Some(gate_up), Some(down), Some(router)) = (
            by_name.remove(&names.gate_up),
            by_name.remove(&names.down),
            by_name.remove(&names.router),
        ) else {
            continue;
        };
        let [gate, up, down_name] = stored.names;
        for e in 0..gate_up.shape[0] {
            let name = |n: &str| format!("{parent}.experts.{e}.{n}.weight");
            by_name.insert(name(gate), gate_up.part(e, 0..f));
            by_name.insert(name(up), gate_up.part(e, f..2 * f));
            by_name.insert(name(down_name), down.part(e, 0..down.shape[1]));
        }
        by_name.insert(format!("{parent}.gate.weight"), router);
    }
    by_name.into_iter().collect()
}

fn write_json(path: &Path, value: &Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value).expect("json");
    std::fs::write(path, text).map_err(|e| export_error(path, format!("cannot write: {e}")))
}
