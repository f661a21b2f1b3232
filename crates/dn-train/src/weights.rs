//! Frozen base weights in transformers names: from a GGUF file (dequantized to f32, q/k rows restored to
//! transformers' layout) or from an HF model directory's safetensors (memory-mapped, one file or shards,
//! any float dtype cast to the training dtype; bitsandbytes 4-bit weights decoded, `crate::bnb`). Only the text model's tensors are loaded: a multimodal
//! checkpoint's vision tower stays on disk.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use dn_model::gguf::GgufMetadata;
use dn_model::weights::hf_tensors_keeping;

use crate::error::{Error, Result};
use crate::quant::QuantMatrix;
use dn_arch::ModelConfig;
use dn_spec::BaseQuantization;

/// A model's architecture and frozen weights, by transformers name.
pub struct BaseModel {
    pub config: ModelConfig,
    pub tensors: HashMap<String, Tensor>,
    /// Where it came from (the GGUF file or the model directory), for adapter configs and errors.
    pub source: PathBuf,
    /// How the checkpoint stored its experts when not fused (merged export writes them back so).
    pub stored_experts: Option<StoredExperts>,
    /// Projection weights kept in their stored quantization (GGUF block types, bitsandbytes 4-bit), by
    /// name; not in `tensors`.
    pub quantized: HashMap<String, Arc<QuantMatrix>>,
}

/// A checkpoint's experts stored one by one: `{parent}.experts.{e}.{names[i]}.weight` for gate, up and
/// down, the router at `{parent}.gate.weight`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredExperts {
    /// `mlp`, or `block_sparse_moe` (Mixtral's checkpoints).
    pub parent: &'static str,
    pub names: [&'static str; 3],
}

fn model_err(path: &Path, message: impl Into<String>) -> Error {
    Error::model(path.display().to_string(), message)
}

impl BaseModel {
    /// Loads a GGUF file or an HF model directory.
    pub fn load(path: &Path, dtype: DType, device: &Device) -> Result<Self> {
        Self::load_with(path, dtype, device, BaseQuantization::AsStored)
    }

    /// [`Self::load`], the base held as `quantization` says: as stored, decoded, or its projections
    /// quantized at load (a model directory's one tensor at a time, so the decoded model is never whole
    /// in memory).
    pub fn load_with(
        path: &Path,
        dtype: DType,
        device: &Device,
        quantization: BaseQuantization,
    ) -> Result<Self> {
        let mut base = if path.is_dir() {
            Self::from_hf_dir(path, dtype, device, quantization)?
        } else {
            Self::from_gguf(path, dtype, device)?
        };
        match quantization {
            BaseQuantization::AsStored => {}
            BaseQuantization::None => {
                for (name, matrix) in std::mem::take(&mut base.quantized) {
                    let tensor = matrix.to_tensor(dtype, device)?;
                    base.tensors.insert(name, tensor);
                }
            }
            BaseQuantization::Nf4 | BaseQuantization::Q8_0 => {
                if let Some((format, _)) = base.quantized_summary()
                    && path.is_file()
                {
                    return Err(model_err(
                        path,
                        format!(
                            "base_quantization {quantization}: the base is stored in {format}, which it keeps \
                             (as_stored) or decodes (none); {quantization} quantizes unquantized weights"
                        ),
                    ));
                }
                for name in projection_weights(&base.config) {
                    if let Some(tensor) = base.tensors.remove(&name) {
                        let matrix = quantize(&tensor, tensor.dtype(), quantization)
                            .map_err(|e| model_err(path, format!("{name}: {e}")))?;
                        base.quantized.insert(name, Arc::new(matrix));
                    }
                }
            }
        }
        Ok(base)
    }

    /// The architecture of a GGUF file or model directory, read without its weights: what a job checks
    /// before preparing data (an unsupported model fails at once, by name).
    pub fn read_config(path: &Path) -> Result<ModelConfig> {
        if path.is_dir() {
            return read_dir_config(path);
        }
        let meta = GgufMetadata::read(path).map_err(|e| model_err(path, e.to_string()))?;
        gguf_config(&meta, path)
    }

    fn from_gguf(path: &Path, dtype: DType, device: &Device) -> Result<Self> {
        let name = path.display().to_string();
        let meta = GgufMetadata::read(path).map_err(|e| model_err(path, e.to_string()))?;
        let config = gguf_config(&meta, path)?;
        let data = std::fs::read(path).map_err(|e| model_err(path, format!("cannot read: {e}")))?;
        // The projections, the embedding and an untied head stay in their block types.
        let mut kept = projection_weights(&config);
        kept.extend([config.embed_name(), config.lm_head_name().to_string()]);
        let keep = |name: &str| kept.contains(name);
        let (decoded, raw) = hf_tensors_keeping(&meta, &data, &name, &keep)
            .map_err(|e| model_err(path, e.to_string()))?;
        drop(data);
        let mut tensors = HashMap::new();
        for t in decoded {
            let tensor = Tensor::from_vec(t.values, t.shape, device)?.to_dtype(dtype)?;
            tensors.insert(t.name, tensor);
        }
        let mut quantized = HashMap::new();
        for t in raw {
            let matrix = QuantMatrix::ggml(t.kind, t.rows, t.cols, t.bytes)
                .map_err(|e| model_err(path, format!("{}: {e}", t.name)))?;
            quantized.insert(t.name, Arc::new(matrix));
        }
        Ok(BaseModel {
            config,
            tensors,
            source: path.to_path_buf(),
            stored_experts: None,
            quantized,
        })
    }

    fn from_hf_dir(
        dir: &Path,
        dtype: DType,
        device: &Device,
        quantization: BaseQuantization,
    ) -> Result<Self> {
        let config = read_dir_config(dir)?;
        let projections = projection_weights(&config);
        let mut quantized = HashMap::new();
        let quantize_now = matches!(quantization, BaseQuantization::Nf4 | BaseQuantization::Q8_0);
        let files = safetensors_files(dir)?;
        let mut tensors = HashMap::new();
        // MXFP4 `*_blocks` and `*_scales` stay bytes until decoded.
        let mut packed = HashMap::new();
        let mut block_sparse_moe = false;
        let mapped = files
            .iter()
            .map(|file| {
                // SAFETY: the file is memory-mapped read-only; a model file changing under a running job
                // is outside what any loader can guard against (transformers mmaps the same way).
                unsafe { candle_core::safetensors::MmapedSafetensors::new(file) }
                    .map_err(|e| model_err(file, e.to_string()))
            })
            .collect::<Result<Vec<_>>>()?;
        // bitsandbytes' 4-bit weights and their parts stay bytes until decoded.
        let stored_names: Vec<String> = mapped
            .iter()
            .flat_map(|m| m.tensors().into_iter().map(|(n, _)| current_name(&n)))
            .collect();
        let mut bnb = crate::bnb::Bnb4Weights::find(stored_names.iter().map(String::as_str));
        // Under a quantized base (QLoRA), the embedding and head bitsandbytes leaves unquantized stay in
        // their stored 16-bit dtype when computed in a wider one (exact: each value is decoded as stored).
        let narrow = [config.embed_name(), config.lm_head_name().to_string()];
        let quantized_base = quantize_now || !bnb.is_empty();
        let keep_narrow = |name: &str, stored: DType| {
            quantized_base
                && matches!(stored, DType::BF16 | DType::F16)
                && dtype.size_in_bytes() > 2
                && narrow.iter().any(|n| n == name)
        };
        for (file, loaded) in files.iter().zip(&mapped) {
            for (stored, view) in loaded.tensors() {
                block_sparse_moe |= stored.contains(".block_sparse_moe.");
                let name = current_name(&stored);
                if !name.starts_with(&config.prefix) && name != config.lm_head_name() {
                    continue;
                }
                if bnb.take(&name, view.data()) {
                    continue;
                }
                let mxfp4 = name.ends_with("_blocks") || name.ends_with("_scales");
                let tensor = loaded
                    .load(&stored, if mxfp4 { &Device::Cpu } else { device })
                    .map_err(|e| model_err(file, format!("tensor {stored}: {e}")))?;
                if mxfp4 {
                    packed.insert(name, tensor);
                    continue;
                }
                if keep_narrow(&name, tensor.dtype())
                    && let Some(matrix) = QuantMatrix::half(&tensor)?
                {
                    quantized.insert(name, Arc::new(matrix));
                    continue;
                }
                if quantize_now && projections.contains(&name) {
                    let matrix = quantize(&tensor, tensor.dtype(), quantization)
                        .map_err(|e| model_err(file, format!("{name}: {e}")))?;
                    quantized.insert(name, Arc::new(matrix));
                    continue;
                }
                tensors.insert(name, tensor.to_dtype(dtype)?);
            }
        }
        let stored = bnb
            .decode(&projections, &mut tensors, dtype, device)
            .map_err(|e| model_err(dir, e))?;
        if quantize_now && !stored.is_empty() {
            return Err(model_err(
                dir,
                format!(
                    "base_quantization {quantization}: the base is stored in bitsandbytes 4-bit, which it keeps \
                     (as_stored) or decodes (none); {quantization} quantizes unquantized weights"
                ),
            ));
        }
        quantized.extend(stored);
        // MXFP4 experts stay so unless the base is decoded (`none`).
        let keep_mxfp4 = !matches!(quantization, BaseQuantization::None);
        crate::interleaved::load(
            &config,
            &mut tensors,
            &packed,
            (dtype, device),
            keep_mxfp4.then_some(&mut quantized),
        )
        .map_err(|e| model_err(dir, e))?;
        let stored_experts = fuse_experts(&config, &mut tensors, &quantized)
            .map_err(|e| model_err(dir, e))?
            .map(|names| StoredExperts {
                parent: if block_sparse_moe {
                    "block_sparse_moe"
                } else {
                    "mlp"
                },
                names,
            });
        Ok(BaseModel {
            config,
            tensors,
            source: dir.to_path_buf(),
            stored_experts,
            quantized,
        })
    }

    /// The device the weights are on.
    pub fn device(&self) -> Device {
        self.tensors
            .values()
            .next()
            .map_or(Device::Cpu, |t| t.device().clone())
    }

    /// A weight decoded into a tensor in `dtype`: a dense one as it is, a quantized one decoded.
    pub fn dense(&self, name: &str, dtype: DType) -> Result<Tensor> {
        match self.quantized.get(name) {
            Some(q) => Ok(q.to_tensor(dtype, &self.device())?),
            None => Ok(self.get(name)?.to_dtype(dtype)?),
        }
    }

    /// The quantized weights' stored format (`Q4_1`, `nf4`, ...) and bytes, if any.
    pub fn quantized_summary(&self) -> Option<(String, u64)> {
        let mut formats: Vec<&str> = self.quantized.values().map(|q| q.format()).collect();
        formats.sort_unstable();
        formats.dedup();
        let bytes = self
            .quantized
            .values()
            .map(|q| q.stored_bytes() as u64)
            .sum();
        (!formats.is_empty()).then(|| (formats.join("+"), bytes))
    }

    /// A weight by transformers name; a missing one is an error naming it.
    pub fn get(&self, name: &str) -> Result<&Tensor> {
        self.tensors.get(name).ok_or_else(|| {
            let why = if self.quantized.contains_key(name) {
                "is kept quantized (decode it with BaseModel::dense)"
            } else {
                "is missing from the model"
            };
            model_err(&self.source, format!("weight {name} {why}"))
        })
    }

    /// The output projection's weight name: the embedding's when tied, else `lm_head.weight`.
    pub fn lm_head_name(&self) -> Result<String> {
        let name = if self.config.tie_word_embeddings {
            self.config.embed_name()
        } else {
            self.config.lm_head_name().to_string()
        };
        if self.tensors.contains_key(&name) || self.quantized.contains_key(&name) {
            return Ok(name);
        }
        Err(model_err(
            &self.source,
            if self.config.tie_word_embeddings {
                format!("{name} (the embedding, tied to the output head) is missing")
            } else {
                "lm_head.weight is missing and the config does not tie it to the embedding (tie_word_embeddings)"
                    .to_string()
            },
        ))
    }
}

/// A dense `[out, in]` weight stored in `stored` quantized as `quantization` says (nf4 or q8_0).
fn quantize(
    tensor: &Tensor,
    stored: DType,
    quantization: BaseQuantization,
) -> std::result::Result<QuantMatrix, String> {
    let err = |e: candle_core::Error| e.to_string();
    let (rows, cols) = tensor.dims2().map_err(err)?;
    let values: Vec<f32> = tensor
        .to_dtype(DType::F32)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1())
        .map_err(err)?;
    match quantization {
        BaseQuantization::Q8_0 => {
            if !cols.is_multiple_of(32) {
                return Err(format!(
                    "q8_0 needs rows of a multiple of 32 values ({cols})"
                ));
            }
            let bytes =
                dn_model::gguf_write::encode(&values, dn_model::gguf_write::TensorType::Q8_0);
            let kind = dn_model::ggml::GgmlType::of(8).ok_or("no Q8_0 type")?;
            QuantMatrix::ggml(kind, rows, cols, bytes)
        }
        _ => {
            use dn_model::bnb4::{Code, QuantState, Rounding};
            let (packed, absmax) = dn_model::bnb4::quantize(&values, Code::Nf4, 64);
            let rounding = match stored {
                DType::BF16 => Rounding::Bf16,
                DType::F16 => Rounding::F16,
                _ => Rounding::F32,
            };
            let state = QuantState {
                code: Code::Nf4,
                blocksize: 64,
                rounding,
                shape: vec![rows, cols],
                nested: None,
            };
            QuantMatrix::bnb4(state, packed, absmax)
        }
    }
}

/// The weight names of every block's projections (what may stay quantized; the experts, embedding, head
/// and norms are decoded at load).
fn projection_weights(config: &ModelConfig) -> std::collections::HashSet<String> {
    (0..config.num_hidden_layers)
        .flat_map(|i| {
            config
                .layer_projections(i)
                .iter()
                .map(move |p| format!("{}.weight", config.projection_path(i, p)))
        })
        .collect()
}

/// A model directory's `config.json`, read as dn-arch describes it.
fn read_dir_config(dir: &Path) -> Result<ModelConfig> {
    let (_, config) =
        dn_model::model_files::read_model_config(dir).map_err(|e| model_err(dir, e))?;
    Ok(config)
}

/// A GGUF's architecture from its metadata (through dn-render's one reading of it), and the ggml block
/// type most of its projection weights are stored in.
fn gguf_config(meta: &GgufMetadata, path: &Path) -> Result<ModelConfig> {
    let name = path.display().to_string();
    let hf = dn_model::hf_config(meta, &name).map_err(|e| model_err(path, e.to_string()))?;
    let mut config = ModelConfig::from_json(&hf, &name)?;
    let mut elements: HashMap<u32, u64> = HashMap::new();
    for t in meta
        .tensors
        .iter()
        .filter(|t| t.name.starts_with("blk.") && t.dims.len() == 2 && !t.name.contains("_exps"))
    {
        *elements.entry(t.kind).or_default() += t.elements();
    }
    let dominant = elements.into_iter().max_by_key(|(_, n)| *n).map(|(k, _)| k);
    if let Some(kind) = dominant.and_then(dn_model::ggml::GgmlType::of)
        && kind.block > 1
    {
        config.quantization = Some(dn_arch::StoredQuantization::Ggml {
            name: kind.name,
            block: kind.block as u16,
            bytes: kind.bytes as u16,
        });
    }
    Ok(config)
}

/// A tensor's name in transformers' current layout: checkpoints saved before transformers 4.52 keep
/// Gemma 3's text model under `language_model.model.` and its head under `language_model.lm_head.`;
/// Mixtral's keep its experts and router under `block_sparse_moe.` (now `mlp.`).
fn current_name(stored: &str) -> String {
    if stored.contains(".block_sparse_moe.") {
        return stored.replace(".block_sparse_moe.", ".mlp.");
    }
    if let Some(rest) = stored.strip_prefix("language_model.model.") {
        format!("model.language_model.{rest}")
    } else if let Some(rest) = stored.strip_prefix("language_model.") {
        rest.to_owned()
    } else {
        stored.to_owned()
    }
}

/// The safetensors files of a model directory: the shards its index names, or `model.safetensors`.
fn safetensors_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let index = dir.join(dn_model::model_files::SHARD_INDEX);
    if index.exists() {
        let shards =
            dn_model::model_files::shard_names(&index).map_err(|e| model_err(&index, e))?;
        return Ok(shards.iter().map(|f| dir.join(f)).collect());
    }
    let single = dir.join("model.safetensors");
    if single.exists() {
        return Ok(vec![single]);
    }
    Err(model_err(
        dir,
        "no model.safetensors or model.safetensors.index.json (the weights are needed to train)",
    ))
}

/// Each expert's gate, up and down projection names in the per-expert layout: transformers 4's Qwen MoE
/// modules, then Mixtral's `w1` (gate), `w3` (up), `w2` (down).
const PER_EXPERT_NAMES: [[&str; 3]; 2] =
    [["gate_proj", "up_proj", "down_proj"], ["w1", "w3", "w2"]];

/// Brings a mixture of experts stored one expert at a time (`mlp.experts.{e}.gate_proj.weight`, ..., as
/// transformers 4 and transformers 5's `save_pretrained` write them) into the fused layout the executors
/// read (`mlp.experts.gate_up_proj [E, 2I, H]`, gate rows first, and `down_proj [E, H, I]`), as
/// transformers 5 does at load. Fused checkpoints are left as they are. Returns the per-expert names
/// found, if any.
fn fuse_experts(
    config: &ModelConfig,
    tensors: &mut HashMap<String, Tensor>,
    kept: &HashMap<String, Arc<QuantMatrix>>,
) -> std::result::Result<Option<[&'static str; 3]>, String> {
    let Some(experts) = config.experts else {
        return Ok(None);
    };
    let mut found = None;
    for (i, layer) in config.layers.iter().enumerate() {
        let names = config.expert_names(i);
        if !layer.sparse
            || tensors.contains_key(&names.gate_up)
            || kept.contains_key(&names.gate_up)
        {
            continue;
        }
        let per_expert = |e: usize, name: &str| format!("{}.{e}.{name}.weight", names.module);
        let Some(&scheme) = PER_EXPERT_NAMES
            .iter()
            .find(|scheme| tensors.contains_key(&per_expert(0, scheme[0])))
        else {
            return Err(format!(
                "{} is missing, and so are the per-expert weights ({})",
                names.gate_up,
                per_expert(0, "gate_proj")
            ));
        };
        let (mut gate_up, mut down) = (Vec::new(), Vec::new());
        for e in 0..experts.count {
            let mut take = |name: &str| {
                let key = per_expert(e, name);
                tensors
                    .remove(&key)
                    .ok_or_else(|| format!("weight {key} is missing from the model"))
            };
            let (gate, up, d) = (take(scheme[0])?, take(scheme[1])?, take(scheme[2])?);
            let both = Tensor::cat(&[&gate, &up], 0).map_err(|e| e.to_string())?;
            gate_up.push(both);
            down.push(d);
        }
        let stack = |parts: &[Tensor]| Tensor::stack(parts, 0).map_err(|e| e.to_string());
        tensors.insert(names.gate_up, stack(&gate_up)?);
        tensors.insert(names.down, stack(&down)?);
        found = Some(scheme);
    }
    Ok(found)
}
