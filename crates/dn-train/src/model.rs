//! A trainable Llama (Llama 2/3.x, SmolLM2, Mistral-style GQA) with LoRA on its projections, as a candle
//! graph whose ops all record a backward (candle-nn's fused RMSNorm, rope and softmax would cut it; ours
//! are custom ops with a backward). The CPU engine (`cpu`) computes the same model by hand on the CPU.
//! Hidden states are 2-D `[tokens, hidden]`: a batch is several examples packed end to end, positions
//! restart per example, and attention never crosses an example boundary.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::{D, DType, Device, Tensor, Var};

use crate::config::LlamaConfig;
use crate::error::Result;
use crate::frozen::Frozen;
use crate::lora::{LoraConfig, LoraPair, seeded_rng};
use crate::norm::fused_rms_norm;
use crate::softmax::causal_softmax;
use crate::weights::BaseModel;

/// A frozen projection with an optional LoRA pair.
pub struct Linear {
    pub(crate) base: Frozen,
    pub lora: Option<LoraPair>,
}

impl Linear {
    fn forward(&self, x: &Tensor, track: bool) -> Result<Tensor> {
        let y = self.base.forward(x)?;
        match &self.lora {
            Some(lora) => Ok((y + lora.delta(x, track)?)?),
            None => Ok(y),
        }
    }
}

pub(crate) struct Block {
    pub(crate) input_norm: Tensor,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    pub(crate) post_norm: Tensor,
    gate: Linear,
    up: Linear,
    down: Linear,
}

impl Block {
    /// q, k, v, o, gate, up, down.
    pub(crate) fn linears(&self) -> [&Linear; 7] {
        [
            &self.q, &self.k, &self.v, &self.o, &self.gate, &self.up, &self.down,
        ]
    }
}

/// Per-batch inputs every block reads.
pub(crate) struct BatchContext {
    cos: Tensor,
    sin: Tensor,
    masks: HashMap<usize, Tensor>,
}

/// Several examples packed into one sequence.
pub struct Packed {
    /// `[tokens]` u32.
    pub ids: Tensor,
    /// Position of each token within its own example.
    pub positions: Vec<u32>,
    /// `(start, len)` of each example.
    pub segments: Vec<(usize, usize)>,
}

impl Packed {
    pub fn new(examples: &[&[u32]], device: &Device) -> Result<Self> {
        let mut ids = Vec::new();
        let mut positions = Vec::new();
        let mut segments = Vec::new();
        for tokens in examples {
            segments.push((ids.len(), tokens.len()));
            ids.extend_from_slice(tokens);
            positions.extend(0..tokens.len() as u32);
        }
        let n = ids.len();
        Ok(Packed {
            ids: Tensor::from_vec(ids, n, device)?,
            positions,
            segments,
        })
    }

    pub fn len(&self) -> usize {
        self.positions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.positions.is_empty()
    }
}

pub struct LlamaLora {
    pub config: LlamaConfig,
    pub lora: LoraConfig,
    pub(crate) embed: Tensor,
    pub(crate) blocks: Vec<Block>,
    pub(crate) norm: Tensor,
    pub(crate) lm_head: Frozen,
    inv_freq: Vec<f32>,
    /// Of the base weights and activations (f32 on CPU, bf16 on CUDA, f64 in gradient tests).
    dtype: DType,
    /// Of the LoRA tensors and optimizer state: f32 under a half-precision base, else the base's.
    lora_dtype: DType,
    device: Device,
    /// Train and evaluate with the hand-written CPU engine (`cpu`) rather than the candle graph.
    cpu_engine: AtomicBool,
    /// Keep only each block's input in the forward and recompute the block in the backward.
    recompute: AtomicBool,
}

/// Half-precision inputs are computed in f32 where precision matters (norms, softmax), as transformers does.
fn compute_dtype(dtype: DType) -> DType {
    match dtype {
        DType::BF16 | DType::F16 => DType::F32,
        other => other,
    }
}

/// RMSNorm from primitives: `x / sqrt(mean(x^2) + eps) * w`, normalised in f32 at least.
fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    if let Some(y) = fused_rms_norm(x, weight, eps)? {
        return Ok(y);
    }
    let xf = x.to_dtype(compute_dtype(x.dtype()))?;
    let mean_sq = xf.sqr()?.mean_keepdim(D::Minus1)?;
    let inv = (mean_sq + eps)?.sqrt()?.recip()?;
    let normed = xf.broadcast_mul(&inv)?.to_dtype(x.dtype())?;
    Ok(normed.broadcast_mul(weight)?)
}

/// Softmax over the last dimension from primitives, in f32 at least (the max is a constant shift: no
/// gradient needed).
fn softmax_last(x: &Tensor) -> Result<Tensor> {
    let xf = x.to_dtype(compute_dtype(x.dtype()))?;
    let max = xf.max_keepdim(D::Minus1)?.detach();
    let e = xf.broadcast_sub(&max)?.exp()?;
    Ok(e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?
        .to_dtype(x.dtype())?)
}

/// Rotates `x [n, heads, head_dim]` by per-token `cos`/`sin [n, 1, head_dim]` (transformers' rotate_half).
fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let half = x.dim(D::Minus1)? / 2;
    let x1 = x.narrow(D::Minus1, 0, half)?;
    let x2 = x.narrow(D::Minus1, half, half)?;
    let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
    Ok((x.broadcast_mul(cos)? + rotated.broadcast_mul(sin)?)?)
}

impl LlamaLora {
    /// The base model with fresh LoRA pairs, initialised from `seed`.
    pub fn new(base: &BaseModel, lora: &LoraConfig, seed: u64) -> Result<Self> {
        lora.validate()?;
        let config = base.config.clone();
        let embed = base.get("model.embed_tokens.weight")?.detach();
        let dtype = embed.dtype();
        let lora_dtype = compute_dtype(dtype);
        let device = embed.device().clone();
        let mut rng = seeded_rng(seed);
        let mut linear = |prefix: &str, short: &str| -> Result<Linear> {
            let frozen = Frozen::new(base.get(&format!("{prefix}.{short}.weight"))?)?;
            let pair = if lora.targets(short) {
                Some(LoraPair::init(
                    format!("{prefix}.{short}"),
                    &frozen,
                    lora,
                    &mut rng,
                    lora_dtype,
                    &device,
                )?)
            } else {
                None
            };
            Ok(Linear {
                base: frozen,
                lora: pair,
            })
        };
        let mut blocks = Vec::with_capacity(config.num_hidden_layers);
        for i in 0..config.num_hidden_layers {
            let p = format!("model.layers.{i}");
            let attn = format!("{p}.self_attn");
            let mlp = format!("{p}.mlp");
            blocks.push(Block {
                input_norm: base.get(&format!("{p}.input_layernorm.weight"))?.detach(),
                q: linear(&attn, "q_proj")?,
                k: linear(&attn, "k_proj")?,
                v: linear(&attn, "v_proj")?,
                o: linear(&attn, "o_proj")?,
                post_norm: base
                    .get(&format!("{p}.post_attention_layernorm.weight"))?
                    .detach(),
                gate: linear(&mlp, "gate_proj")?,
                up: linear(&mlp, "up_proj")?,
                down: linear(&mlp, "down_proj")?,
            });
        }
        Ok(LlamaLora {
            inv_freq: config.inv_freq(),
            norm: base.get("model.norm.weight")?.detach(),
            lm_head: Frozen::new(base.lm_head()?)?,
            embed,
            blocks,
            config,
            lora: lora.clone(),
            dtype,
            lora_dtype,
            cpu_engine: AtomicBool::new(
                device.is_cpu() && matches!(dtype, DType::F32 | DType::F64),
            ),
            recompute: AtomicBool::new(!device.is_cpu()),
            device,
        })
    }

    /// Whether training and evaluation run on the CPU engine (the default for f32/f64 on the CPU).
    pub fn uses_cpu_engine(&self) -> bool {
        self.cpu_engine.load(Ordering::Relaxed)
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

    /// Switches the CPU engine off (the candle graph instead, as on CUDA) or back on where it applies;
    /// tests hold the two paths to each other.
    pub fn set_cpu_engine(&self, on: bool) {
        let applies = self.device.is_cpu() && matches!(self.dtype, DType::F32 | DType::F64);
        self.cpu_engine.store(on && applies, Ordering::Relaxed);
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

    pub fn lm_head(&self) -> &Frozen {
        &self.lm_head
    }

    /// Every LoRA pair, in layer order, then q, k, v, o, gate, up, down.
    pub fn lora_pairs(&self) -> Vec<&LoraPair> {
        self.blocks
            .iter()
            .flat_map(|b| [&b.q, &b.k, &b.v, &b.o, &b.gate, &b.up, &b.down])
            .filter_map(|l| l.lora.as_ref())
            .collect()
    }

    /// The trainable tensors (A then B of every pair, in [`Self::lora_pairs`] order).
    pub fn trainable(&self) -> Vec<&Var> {
        self.lora_pairs()
            .into_iter()
            .flat_map(|p| [&p.a, &p.b])
            .collect()
    }

    /// Cos and sin `[n, head_dim / 2]` of every token's rotary angles, rounded to f32 as transformers
    /// computes them (except in f64, for the gradient checks).
    pub(crate) fn rope_tables(&self, positions: &[u32]) -> (Vec<f64>, Vec<f64>) {
        let half = self.inv_freq.len();
        let mut cos = Vec::with_capacity(positions.len() * half);
        let mut sin = Vec::with_capacity(positions.len() * half);
        for &p in positions {
            for f in &self.inv_freq {
                let angle = if self.dtype == DType::F64 {
                    p as f64 * *f as f64
                } else {
                    (p as f32 * f) as f64
                };
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
        (cos, sin)
    }

    /// Cos and sin `[n, 1, head_dim]` (each half-row repeated, as `rotate_half` pairs them).
    fn rotary(&self, positions: &[u32]) -> Result<(Tensor, Tensor)> {
        let half = self.inv_freq.len();
        let n = positions.len();
        let (cos, sin) = self.rope_tables(positions);
        let repeat = |v: Vec<f64>| -> Result<Tensor> {
            let full: Vec<f64> = v
                .chunks(half)
                .flat_map(|row| row.iter().chain(row))
                .copied()
                .collect();
            Ok(Tensor::from_vec(full, (n, 1, half * 2), &self.device)?.to_dtype(self.dtype)?)
        };
        Ok((repeat(cos)?, repeat(sin)?))
    }

    /// What every block of a batch shares: rotary cos/sin and, on the primitive attention path, the
    /// additive causal masks by example length.
    pub(crate) fn batch_context(&self, batch: &Packed) -> Result<BatchContext> {
        let (cos, sin) = self.rotary(&batch.positions)?;
        // Additive masks only for the primitive attention path (GPU or half precision); the CPU uses the
        // fused causal softmax.
        let mut masks = HashMap::new();
        if !(self.device.is_cpu() && matches!(self.dtype, DType::F32 | DType::F64)) {
            for &(_, len) in &batch.segments {
                if let std::collections::hash_map::Entry::Vacant(slot) = masks.entry(len) {
                    slot.insert(causal_mask(len, self.dtype, &self.device)?);
                }
            }
        }
        Ok(BatchContext { cos, sin, masks })
    }

    /// The token embeddings of a packed batch (no graph: the embedding is frozen).
    pub(crate) fn embed(&self, batch: &Packed) -> Result<Tensor> {
        Ok(self.embed.index_select(&batch.ids, 0)?)
    }

    pub(crate) fn num_blocks(&self) -> usize {
        self.blocks.len()
    }

    /// Block `i` applied to `x`; with `track`, its graph is recorded.
    pub(crate) fn block_forward(
        &self,
        i: usize,
        x: &Tensor,
        ctx: &BatchContext,
        batch: &Packed,
        track: bool,
    ) -> Result<Tensor> {
        self.block(
            &self.blocks[i],
            x,
            &ctx.cos,
            &ctx.sin,
            batch,
            &ctx.masks,
            track,
        )
    }

    pub(crate) fn final_norm(&self, x: &Tensor) -> Result<Tensor> {
        rms_norm(x, &self.norm, self.config.rms_norm_eps)
    }

    /// Final hidden states `[tokens, hidden]` (after the last norm) of a packed batch. With `track`
    /// false no graph is recorded (evaluation: activations are freed layer by layer).
    pub fn hidden(&self, batch: &Packed, track: bool) -> Result<Tensor> {
        let ctx = self.batch_context(batch)?;
        let mut x = self.embed(batch)?;
        for i in 0..self.blocks.len() {
            x = self.block_forward(i, &x, &ctx, batch, track)?;
        }
        self.final_norm(&x)
    }

    #[allow(clippy::too_many_arguments)]
    fn block(
        &self,
        b: &Block,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        batch: &Packed,
        masks: &HashMap<usize, Tensor>,
        track: bool,
    ) -> Result<Tensor> {
        let eps = self.config.rms_norm_eps;
        let h = rms_norm(x, &b.input_norm, eps)?;
        let attn = self.attention(b, &h, cos, sin, batch, masks, track)?;
        let x = (x + b.o.forward(&attn, track)?)?;
        let h = rms_norm(&x, &b.post_norm, eps)?;
        let act = (b.gate.forward(&h, track)?.silu()? * b.up.forward(&h, track)?)?;
        Ok((x + b.down.forward(&act, track)?)?)
    }

    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        b: &Block,
        h: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        batch: &Packed,
        masks: &HashMap<usize, Tensor>,
        track: bool,
    ) -> Result<Tensor> {
        let c = &self.config;
        let (heads, kv, hd) = (c.num_attention_heads, c.num_key_value_heads, c.head_dim);
        let groups = heads / kv;
        let n = h.dim(0)?;
        let q = rope(&b.q.forward(h, track)?.reshape((n, heads, hd))?, cos, sin)?;
        let k = rope(&b.k.forward(h, track)?.reshape((n, kv, hd))?, cos, sin)?;
        let v = b.v.forward(h, track)?.reshape((n, kv, hd))?;
        let scale = 1.0 / (hd as f64).sqrt();
        let mut outputs = Vec::with_capacity(batch.segments.len());
        for &(start, len) in &batch.segments {
            // Query heads that share a key/value head sit next to each other (transformers' repeat_kv),
            // so [heads, len, hd] regroups as [kv, groups * len, hd] without copying keys or values.
            let qs = q
                .narrow(0, start, len)?
                .transpose(0, 1)?
                .contiguous()?
                .reshape((kv, groups * len, hd))?;
            let ks = k.narrow(0, start, len)?.transpose(0, 1)?.contiguous()?;
            let vs = v.narrow(0, start, len)?.transpose(0, 1)?.contiguous()?;
            let raw = qs.matmul(&ks.t()?)?;
            let probs = match causal_softmax(&raw, scale)? {
                Some(probs) => probs,
                None => {
                    let scores = (raw * scale)?
                        .reshape((kv, groups, len, len))?
                        .broadcast_add(&masks[&len])?;
                    softmax_last(&scores)?.reshape((kv, groups * len, len))?
                }
            };
            let out = probs
                .matmul(&vs)?
                .reshape((heads, len, hd))?
                .transpose(0, 1)?
                .reshape((len, heads * hd))?;
            outputs.push(out);
        }
        Ok(Tensor::cat(&outputs, 0)?)
    }
}

/// `[len, len]`: 0 where a token may attend (itself and earlier), -inf elsewhere.
fn causal_mask(len: usize, dtype: DType, device: &Device) -> Result<Tensor> {
    let values: Vec<f32> = (0..len)
        .flat_map(|i| (0..len).map(move |j| if j <= i { 0.0 } else { f32::NEG_INFINITY }))
        .collect();
    Ok(Tensor::from_vec(values, (len, len), device)?.to_dtype(dtype)?)
}
