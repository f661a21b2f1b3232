//! A trainable decoder model of any supported family (its [`ModelConfig`] says which features are on):
//! the frozen base weights and the LoRA pairs on its projections, as both executors read them. The graph
//! executor (`graph`) computes it as a candle graph whose ops all record a backward (candle-nn's fused
//! RMSNorm, rope and softmax would cut it; ours are custom ops with a backward); the CPU engine (`cpu`)
//! computes the same model by hand on the CPU. Hidden states are 2-D `[tokens, hidden]`: a batch is
//! several examples packed end to end, positions restart per example, and attention never crosses an
//! example boundary.

mod experts;
mod footprint;

use std::cell::OnceCell;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use candle_core::{DType, Device, Tensor, Var};
use dn_arch::{Layer, ModelConfig, Projection, Role};

use crate::error::{Error, Result};
use crate::frozen::{Frozen, FrozenBase};
use crate::lora::{LoraConfig, LoraPair, seeded_rng};
use crate::weights::BaseModel;
pub(crate) use experts::FrozenExperts;
pub use experts::{ExpertMlp, RouterLoad};
pub use footprint::BaseMemory;

/// A frozen projection with an optional frozen bias and an optional LoRA pair.
pub struct Linear {
    pub(crate) base: FrozenBase,
    pub(crate) bias: Option<Tensor>,
    pub lora: Option<LoraPair>,
    pub(crate) role: Role,
}

/// A projection's input and its cast to the adapters' dtype, made once when a LoRA pair first asks:
/// the projections that read one input (q, k, v; gate and up) share the cast and its backward.
pub(crate) struct ProjectionInput<'a> {
    x: &'a Tensor,
    cast: OnceCell<Tensor>,
}

impl<'a> ProjectionInput<'a> {
    pub(crate) fn new(x: &'a Tensor) -> Self {
        ProjectionInput {
            x,
            cast: OnceCell::new(),
        }
    }

    fn cast(&self, dtype: DType) -> Result<&Tensor> {
        if let Some(cast) = self.cast.get() {
            return Ok(cast);
        }
        let cast = self.x.to_dtype(dtype)?;
        Ok(self.cast.get_or_init(|| cast))
    }
}

impl Linear {
    pub(crate) fn forward(&self, input: &ProjectionInput<'_>, track: bool) -> Result<Tensor> {
        let mut y = self.base.forward(input.x)?;
        if let Some(bias) = &self.bias {
            y = y.broadcast_add(bias)?;
        }
        match &self.lora {
            Some(lora) => {
                let delta = lora.delta(input.cast(lora.dtype())?, track)?;
                Ok((y + delta.to_dtype(input.x.dtype())?)?)
            }
            None => Ok(y),
        }
    }
}

pub(crate) struct Block {
    /// Norm weights with the family's offset applied (`1 + w` for Gemma).
    pub(crate) input_norm: Tensor,
    pub(crate) q_norm: Option<Tensor>,
    pub(crate) k_norm: Option<Tensor>,
    pub(crate) post_attention_norm: Option<Tensor>,
    pub(crate) mlp_norm: Tensor,
    pub(crate) post_mlp_norm: Option<Tensor>,
    /// In [`ModelConfig::layer_projections`] order (no MLP projection in a sparse block).
    pub(crate) linears: Vec<Linear>,
    /// The mixture of experts that is a sparse block's MLP.
    pub(crate) experts: Option<ExpertMlp>,
    /// Each head's sink logit `[heads]` (gpt-oss), frozen.
    pub(crate) sinks: Option<Tensor>,
    pub(crate) layer: Layer,
}

impl Block {
    /// The optional norms and the MLP norm: q, k, post-attention, MLP, post-MLP.
    pub(crate) fn norms(&self) -> [Option<&Tensor>; 5] {
        [
            self.q_norm.as_ref(),
            self.k_norm.as_ref(),
            self.post_attention_norm.as_ref(),
            Some(&self.mlp_norm),
            self.post_mlp_norm.as_ref(),
        ]
    }

    /// The block's LoRA pairs in [`LoraModel::lora_pairs`] order.
    pub(crate) fn lora_pairs(&self) -> impl Iterator<Item = &LoraPair> {
        let experts = self.experts.iter().flat_map(ExpertMlp::pairs);
        self.linears
            .iter()
            .filter_map(|l| l.lora.as_ref())
            .chain(experts)
    }

    pub(crate) fn linear(&self, role: Role) -> &Linear {
        self.linears
            .iter()
            .find(|l| l.role == role)
            .expect("the block has every projection its config names")
    }
}

/// The two ways dn-train computes one model, held to each other in f64 by the tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Executor {
    /// The hand-written CPU engine (`cpu/`): f32 or f64 on the CPU, the default there.
    CpuEngine,
    /// The candle graph (`graph/`): CUDA, half precision, or the CPU on request.
    Graph,
}

impl Executor {
    /// The CPU engine where it applies (the CPU, f32 or f64), else the graph.
    pub fn default_for(device: &Device, dtype: DType) -> Self {
        if Self::engine_applies(device, dtype) {
            Executor::CpuEngine
        } else {
            Executor::Graph
        }
    }

    fn engine_applies(device: &Device, dtype: DType) -> bool {
        device.is_cpu() && matches!(dtype, DType::F32 | DType::F64)
    }
}

pub struct LoraModel {
    pub config: ModelConfig,
    /// The LoRA settings with the target modules resolved for this family (`all-linear` expanded).
    pub lora: LoraConfig,
    /// `[vocab, hidden]`, frozen: dense, or kept in its stored quantization.
    pub(crate) embed: FrozenBase,
    pub(crate) blocks: Vec<Block>,
    pub(crate) norm: Tensor,
    pub(crate) lm_head: FrozenBase,
    /// Of the base weights and activations (f32 on CPU, bf16 on CUDA, f64 in gradient tests).
    pub(crate) dtype: DType,
    /// Of the LoRA tensors and optimizer state: f32 under a half-precision base, else the base's.
    lora_dtype: DType,
    pub(crate) device: Device,
    /// Which executor computes the loss, its gradients and generation: fixed when the model is built.
    executor: Executor,
    /// Keep only each block's input in the forward and recompute the block in the backward.
    recompute: AtomicBool,
    /// Query rows per attention block on the graph (0: from the heads and the longest example).
    attention_block: AtomicUsize,
    /// Per rope setting, the graph's cos and sin rows `[positions, 1, rotary_dim]` of positions `0..`,
    /// in the model's dtype on its device: built once, grown when a longer example comes.
    pub(crate) rope_cache: Mutex<Vec<Option<(Tensor, Tensor)>>>,
}

/// Half-precision inputs are computed in f32 where precision matters (norms, softmax), as transformers does.
pub(crate) fn compute_dtype(dtype: DType) -> DType {
    match dtype {
        DType::BF16 | DType::F16 => DType::F32,
        other => other,
    }
}

/// `tensor` must have `dims` (what the config makes it); a checkpoint that disagrees is refused by name.
pub(crate) fn check_shape(
    base: &BaseModel,
    name: &str,
    tensor: &Tensor,
    dims: &[usize],
) -> Result<()> {
    if tensor.dims() != dims {
        return Err(Error::model(
            base.source.display().to_string(),
            format!(
                "{name} has shape {:?}; the config makes it {dims:?}",
                tensor.dims()
            ),
        ));
    }
    Ok(())
}

/// A norm weight as the executors apply it. Gemma's `1 + w` is computed and applied in f32 (its norm
/// multiplies before casting back); other families' weights stay in the base dtype (their norms cast the
/// normalised input back first, then multiply).
fn norm_weight(base: &BaseModel, name: &str, width: usize, offset: f64) -> Result<Tensor> {
    let w = base.get(name)?.detach();
    check_shape(base, name, &w, &[width])?;
    if offset == 0.0 {
        return Ok(w);
    }
    Ok((w.to_dtype(compute_dtype(w.dtype()))? + offset)?)
}

impl LoraModel {
    /// The base model with fresh LoRA pairs, initialised from `seed`, computed by the executor its device
    /// and dtype default to ([`Executor::default_for`]).
    pub fn new(base: &BaseModel, lora: &LoraConfig, seed: u64) -> Result<Self> {
        Self::build(base, lora, seed, None)
    }

    /// [`LoraModel::new`] computed by `executor`; the CPU engine is refused off the CPU or in half
    /// precision.
    pub fn with_executor(
        base: &BaseModel,
        lora: &LoraConfig,
        seed: u64,
        executor: Executor,
    ) -> Result<Self> {
        Self::build(base, lora, seed, Some(executor))
    }

    fn build(
        base: &BaseModel,
        lora: &LoraConfig,
        seed: u64,
        executor: Option<Executor>,
    ) -> Result<Self> {
        let config = base.config.clone();
        let lora = lora.resolve(&config)?;
        let (d, hd) = (config.hidden_size, config.head_dim);
        // The final norm is always held dense: its dtype is the base's.
        let dtype = base.get(&config.final_norm_name())?.dtype();
        let embed = frozen_weight(base, &config.embed_name(), [config.vocab_size, d], dtype)?;
        let lm_head = frozen_weight(base, &base.lm_head_name()?, [config.vocab_size, d], dtype)?;
        let lora_dtype = compute_dtype(dtype);
        let device = base.device();
        let mut rng = seeded_rng(seed);
        let offset = config.norm_offset;
        let mut blocks = Vec::with_capacity(config.num_hidden_layers);
        for (i, layer) in config.layers.iter().enumerate() {
            let names = config.block_names(i);
            let optional = |name: &Option<String>, width: usize| -> Result<Option<Tensor>> {
                name.as_deref()
                    .map(|n| norm_weight(base, n, width, offset))
                    .transpose()
            };
            let mut linears = Vec::new();
            for p in config.layer_projections(i) {
                linears.push(linear(
                    base,
                    &config,
                    i,
                    p,
                    &lora,
                    &mut rng,
                    (dtype, lora_dtype),
                )?);
            }
            let experts = layer
                .sparse
                .then(|| ExpertMlp::load(base, &config, i, &lora, &mut rng, lora_dtype))
                .transpose()?;
            blocks.push(Block {
                input_norm: norm_weight(base, &names.input_norm, d, offset)?,
                q_norm: optional(&names.q_norm, hd)?,
                k_norm: optional(&names.k_norm, hd)?,
                post_attention_norm: optional(&names.post_attention_norm, d)?,
                mlp_norm: norm_weight(base, &names.mlp_norm, d, offset)?,
                post_mlp_norm: optional(&names.post_mlp_norm, d)?,
                linears,
                experts,
                sinks: names
                    .sinks
                    .as_deref()
                    .map(|n| -> Result<Tensor> {
                        let t = base.get(n)?.detach();
                        check_shape(base, n, &t, &[config.num_attention_heads])?;
                        Ok(t)
                    })
                    .transpose()?,
                layer: *layer,
            });
        }
        let executor = executor.unwrap_or(Executor::default_for(&device, dtype));
        if executor == Executor::CpuEngine && !Executor::engine_applies(&device, dtype) {
            return Err(Error::invalid(
                "executor",
                format!(
                    "the CPU engine computes f32 or f64 on the CPU, not {dtype:?} on {device:?}"
                ),
            ));
        }
        Ok(LoraModel {
            norm: norm_weight(base, &config.final_norm_name(), d, offset)?,
            lm_head,
            embed,
            blocks,
            rope_cache: Mutex::new(vec![None; config.ropes.len()]),
            config,
            lora,
            dtype,
            lora_dtype,
            executor,
            recompute: AtomicBool::new(!device.is_cpu()),
            attention_block: AtomicUsize::new(0),
            device,
        })
    }

    /// The executor that computes this model (chosen when it was built).
    pub fn executor(&self) -> Executor {
        self.executor
    }

    /// Whether training recomputes each block in the backward from its saved input (activation
    /// checkpointing): memory per token drops to one hidden vector per block plus one block's
    /// activations, for one extra forward. On by default on CUDA, off on the CPU, where the engine keeps
    /// little per block already.
    pub fn recomputes(&self) -> bool {
        self.recompute.load(Ordering::Relaxed)
    }

    pub fn set_recompute(&self, on: bool) {
        self.recompute.store(on, Ordering::Relaxed);
    }

    /// Query rows per attention block on the graph; 0 (the default) picks them from the number of heads
    /// and the longest example, so one block's scores stay under 128 MB.
    pub fn attention_block_rows(&self) -> usize {
        self.attention_block.load(Ordering::Relaxed)
    }

    pub fn set_attention_block_rows(&self, rows: usize) {
        self.attention_block.store(rows, Ordering::Relaxed);
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn lora_dtype(&self) -> DType {
        self.lora_dtype
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn lm_head(&self) -> &FrozenBase {
        &self.lm_head
    }

    /// Every LoRA pair, in layer order, then in [`ModelConfig::layer_projections`] order, then the
    /// experts' (gate_up, down).
    pub fn lora_pairs(&self) -> Vec<&LoraPair> {
        self.blocks.iter().flat_map(Block::lora_pairs).collect()
    }

    /// Each sparse layer's router load since the last call (tokens per expert over every forward pass,
    /// training's and evaluation's), reset; empty for a dense model.
    pub fn take_router_load(&self) -> Vec<RouterLoad> {
        self.blocks
            .iter()
            .enumerate()
            .filter_map(|(layer, b)| {
                b.experts.as_ref().map(|e| RouterLoad {
                    layer,
                    tokens: e.take_load(),
                })
            })
            .collect()
    }

    /// Trainable parameters per module group: `attention`, `mlp` (dense MLPs), `router`, `experts` (a
    /// pair per expert), each present only when it has some (the routers only when targeted).
    pub fn trainable_by_group(&self) -> Vec<(&'static str, usize)> {
        let mut groups: Vec<(&'static str, usize)> = Vec::new();
        let routers: Vec<String> = (0..self.config.num_hidden_layers)
            .filter(|i| self.config.layers[*i].sparse)
            .map(|i| self.config.expert_names(i).router_module)
            .collect();
        for pair in self.lora_pairs() {
            let group = if routers.contains(&pair.module) {
                "router"
            } else if pair.experts > 1 || pair.module.contains(".mlp.experts") {
                "experts"
            } else if pair.module.contains(".self_attn.") {
                "attention"
            } else {
                "mlp"
            };
            let count = pair.a.as_tensor().elem_count() + pair.b.as_tensor().elem_count();
            match groups.iter_mut().find(|(g, _)| *g == group) {
                Some((_, n)) => *n += count,
                None => groups.push((group, count)),
            }
        }
        groups
    }

    /// The trainable tensors (A then B of every pair, in [`Self::lora_pairs`] order).
    pub fn trainable(&self) -> Vec<&Var> {
        self.lora_pairs()
            .into_iter()
            .flat_map(|p| [&p.a, &p.b])
            .collect()
    }

    /// Cos and sin `[n, rotary_dim / 2]` of the rotary angles of rope setting `rope` for rows given as
    /// spans `(first position, rows, length)`: the positions `first..first + rows` of a sequence of
    /// `length` tokens (what length-dependent frequencies follow), with the setting's factor applied,
    /// rounded to f32 as transformers computes them (except in f64, for the gradient checks).
    pub(crate) fn rope_rows(
        &self,
        rope: usize,
        spans: &[(usize, usize, usize)],
    ) -> (Vec<f64>, Vec<f64>) {
        let setting = &self.config.ropes[rope];
        let half = setting.rotary_dim / 2;
        let exact = self.dtype == DType::F64;
        let n: usize = spans.iter().map(|s| s.1).sum();
        let (mut cos, mut sin) = (Vec::with_capacity(n * half), Vec::with_capacity(n * half));
        let mut frequencies = setting.frequencies(0);
        for &(first, rows, len) in spans {
            if setting.depends_on_length() {
                frequencies = setting.frequencies(len);
            }
            let factor = frequencies.attention_factor;
            for p in first as u32..(first + rows) as u32 {
                for f in &frequencies.inv_freq {
                    if exact {
                        let angle = p as f64 * *f as f64;
                        cos.push(angle.cos() * factor as f64);
                        sin.push(angle.sin() * factor as f64);
                    } else {
                        let angle = (p as f32 * f) as f64;
                        cos.push((angle.cos() as f32 * factor) as f64);
                        sin.push((angle.sin() as f32 * factor) as f64);
                    }
                }
            }
        }
        (cos, sin)
    }

    pub(crate) fn num_blocks(&self) -> usize {
        self.blocks.len()
    }
}

/// The frozen `[out, inp]` weight `name`: kept in its stored quantization when the base keeps it so, else
/// dense.
fn frozen_weight(
    base: &BaseModel,
    name: &str,
    [out, inp]: [usize; 2],
    dtype: DType,
) -> Result<FrozenBase> {
    Ok(match base.quantized.get(name) {
        Some(q) => {
            if (q.rows, q.cols) != (out, inp) {
                return Err(Error::model(
                    base.source.display().to_string(),
                    format!(
                        "weight {name} has shape [{}, {}]; the config makes it [{out}, {inp}]",
                        q.rows, q.cols
                    ),
                ));
            }
            FrozenBase::Quantized(crate::quant::QuantLinear::new(q.clone(), dtype))
        }
        None => {
            let weight = base.get(name)?;
            check_shape(base, name, weight, &[out, inp])?;
            FrozenBase::Dense(Frozen::new(weight)?)
        }
    })
}

/// One projection of block `i`, its bias and, when targeted, a fresh LoRA pair.
fn linear(
    base: &BaseModel,
    config: &ModelConfig,
    i: usize,
    p: &Projection,
    lora: &LoraConfig,
    rng: &mut rand_chacha::ChaCha8Rng,
    (dtype, lora_dtype): (DType, DType),
) -> Result<Linear> {
    let path = config.projection_path(i, p);
    let name = format!("{path}.weight");
    let (out, inp) = (config.out_features(p.role), config.in_features(p.role));
    let frozen = frozen_weight(base, &name, [out, inp], dtype)?;
    let device = base.device();
    let bias = if config.has_bias(p.role) {
        let name = format!("{path}.bias");
        let b = base.get(&name)?.detach();
        check_shape(base, &name, &b, &[out])?;
        Some(b.to_dtype(dtype)?)
    } else {
        None
    };
    let pair = if lora.targets(p.name) && config.adaptable(p) {
        Some(LoraPair::init_shaped(
            path,
            (inp, out, 1),
            lora,
            rng,
            lora_dtype,
            &device,
        )?)
    } else {
        None
    };
    Ok(Linear {
        base: frozen,
        bias,
        lora: pair,
        role: p.role,
    })
}
