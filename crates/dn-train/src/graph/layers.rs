//! The candle graph of one decoder block and what blocks share per batch: RMSNorm, rope (partial, per
//! layer type), attention per packed example (grouped heads, windows, soft-caps), the gated MLP.

use std::collections::HashMap;

use candle_core::{D, Tensor};
use dn_arch::{Activation, Role};

use super::blocked_attention::{AttentionSpec, MaskBand, auto_block_rows, blocked_attention};
use crate::batch::Packed;
use crate::error::Result;
use crate::model::{Block, LoraModel, ProjectionInput, compute_dtype};
use crate::norm::fused_rms_norm;

/// Rows of a rope table at least (a short first batch does not make the next one rebuild it).
const ROPE_TABLE_MIN_ROWS: usize = 256;

/// Per-batch inputs every block reads.
pub(crate) struct BatchContext {
    /// Cos and sin `[n, 1, rotary_dim]` per rope setting.
    ropes: Vec<(Tensor, Tensor)>,
    /// The query-block masks of each window (`None`: causal only).
    masks: HashMap<Option<usize>, MaskBand>,
    /// Query rows per attention block.
    block: usize,
}

/// RMSNorm from primitives: `x / sqrt(mean(x^2) + eps) * w`, normalised in f32 at least. A weight in the
/// input's dtype multiplies after the cast back (Llama's order); an f32 weight under a half-precision input
/// multiplies before it (Gemma's).
fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    if let Some(y) = fused_rms_norm(x, weight, eps)? {
        return Ok(y);
    }
    let xf = x.to_dtype(compute_dtype(x.dtype()))?;
    let mean_sq = xf.sqr()?.mean_keepdim(D::Minus1)?;
    let inv = (mean_sq + eps)?.sqrt()?.recip()?;
    let normed = xf.broadcast_mul(&inv)?;
    if weight.dtype() == x.dtype() {
        return Ok(normed.to_dtype(x.dtype())?.broadcast_mul(weight)?);
    }
    Ok(normed
        .broadcast_mul(&weight.to_dtype(normed.dtype())?)?
        .to_dtype(x.dtype())?)
}

/// `cap * tanh(x / cap)`.
pub(crate) fn softcap(x: &Tensor, cap: f64) -> Result<Tensor> {
    Ok(((x / cap)?.tanh()? * cap)?)
}

/// Rotates the first `rotary` dimensions of `x [n, heads, head_dim]` by per-token `cos`/`sin
/// [n, 1, rotary]` (transformers' rotate_half on the rotary part; the rest passes unchanged).
fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let (hd, rotary) = (x.dim(D::Minus1)?, cos.dim(D::Minus1)?);
    let rot = x.narrow(D::Minus1, 0, rotary)?;
    let half = rotary / 2;
    let x1 = rot.narrow(D::Minus1, 0, half)?;
    let x2 = rot.narrow(D::Minus1, half, half)?;
    let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
    let out = (rot.broadcast_mul(cos)? + rotated.broadcast_mul(sin)?)?;
    if rotary == hd {
        return Ok(out);
    }
    Ok(Tensor::cat(
        &[&out, &x.narrow(D::Minus1, rotary, hd - rotary)?],
        D::Minus1,
    )?)
}

/// GELU with the tanh approximation, from primitives (candle's fused gelu rounds its constants).
pub(crate) fn gelu_tanh(x: &Tensor) -> Result<Tensor> {
    let inner = ((x + (x.sqr()? * x)?.affine(0.044715, 0.0)?)? * 0.797_884_560_802_865_4)?;
    Ok(((x * 0.5)? * (inner.tanh()? + 1.0)?)?)
}

impl LoraModel {
    /// Cos and sin `[n, 1, rotary_dim]` of a batch's tokens (each half-row repeated, as `rotate_half`
    /// pairs them): gathered by position from a table kept on the device, or computed for the batch when
    /// the frequencies follow each example's length (longrope).
    fn rotary(&self, rope: usize, batch: &Packed, positions: &Tensor) -> Result<(Tensor, Tensor)> {
        if self.config.ropes[rope].depends_on_length() {
            return self.rotary_rows(rope, &batch.spans());
        }
        let rows = batch.positions.iter().max().map_or(0, |p| *p as usize + 1);
        let (cos, sin) = self.rope_table(rope, rows)?;
        Ok((
            cos.index_select(positions, 0)?,
            sin.index_select(positions, 0)?,
        ))
    }

    /// The cached cos and sin rows of positions `0..len` at least, grown (to a power of two) when a
    /// later position comes.
    fn rope_table(&self, rope: usize, len: usize) -> Result<(Tensor, Tensor)> {
        let mut cache = self
            .rope_cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((cos, sin)) = &cache[rope]
            && cos.dim(0)? >= len
        {
            return Ok((cos.clone(), sin.clone()));
        }
        let rows = len.next_power_of_two().max(ROPE_TABLE_MIN_ROWS);
        let table = self.rotary_rows(rope, &[(0, rows, rows)])?;
        cache[rope] = Some(table.clone());
        Ok(table)
    }

    /// Cos and sin `[n, 1, rotary_dim]` of rows given as spans (see [`LoraModel::rope_rows`]).
    fn rotary_rows(
        &self,
        rope: usize,
        spans: &[(usize, usize, usize)],
    ) -> Result<(Tensor, Tensor)> {
        let half = self.config.ropes[rope].rotary_dim / 2;
        let (cos, sin) = self.rope_rows(rope, spans);
        let n = cos.len() / half.max(1);
        let repeat = |v: Vec<f64>| -> Result<Tensor> {
            let full: Vec<f64> = v
                .chunks(half)
                .flat_map(|row| row.iter().chain(row))
                .copied()
                .collect();
            Ok(Tensor::from_vec(full, (n, 1, half * 2), self.device())?.to_dtype(self.dtype())?)
        };
        Ok((repeat(cos)?, repeat(sin)?))
    }

    /// The token embeddings of a packed batch, scaled where the family does (no graph: the embedding is
    /// frozen).
    pub(crate) fn embed(&self, batch: &Packed) -> Result<Tensor> {
        let x = self.embed.rows(&batch.ids)?;
        match self.config.embedding_scale {
            // As transformers: the scale rounded to the weights' dtype, then multiplied.
            Some(scale) => {
                let scale = Tensor::new(scale, &self.device)?.to_dtype(self.dtype)?;
                Ok(x.broadcast_mul(&scale)?)
            }
            None => Ok(x),
        }
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

    /// What every block of a batch shares, built once per batch: rotary cos/sin per rope setting and the
    /// attention masks of each window.
    pub(crate) fn batch_context(&self, batch: &Packed) -> Result<BatchContext> {
        let positions = Tensor::new(batch.positions.as_slice(), self.device())?;
        let ropes = (0..self.config.ropes.len())
            .map(|i| self.rotary(i, batch, &positions))
            .collect::<Result<Vec<_>>>()?;
        let max_len = batch.segments.iter().map(|s| s.1).max().unwrap_or(0);
        let block = match self.attention_block_rows() {
            0 => auto_block_rows(self.config.num_attention_heads, max_len),
            rows => rows,
        };
        let mut masks = HashMap::new();
        for layer in &self.config.layers {
            if let std::collections::hash_map::Entry::Vacant(slot) = masks.entry(layer.window) {
                let dtype = compute_dtype(self.dtype());
                slot.insert(MaskBand::new(
                    block,
                    max_len,
                    layer.window,
                    dtype,
                    self.device(),
                )?);
            }
        }
        Ok(BatchContext {
            ropes,
            masks,
            block,
        })
    }

    pub(crate) fn final_norm(&self, x: &Tensor) -> Result<Tensor> {
        rms_norm(x, &self.norm, self.config.rms_norm_eps)
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
        let b = &self.blocks[i];
        let eps = self.config.rms_norm_eps;
        let h = rms_norm(x, &b.input_norm, eps)?;
        let attn = self.attention(b, &h, ctx, batch, track)?;
        let mut o = b
            .linear(Role::O)
            .forward(&ProjectionInput::new(&attn), track)?;
        if let Some(w) = &b.post_attention_norm {
            o = rms_norm(&o, w, eps)?;
        }
        let x = (x + o)?;
        let h = rms_norm(&x, &b.mlp_norm, eps)?;
        if let Some(experts) = &b.experts {
            let (m, _) = super::experts::forward(experts, &h, self.config.activation, track)?;
            return Ok((x + m)?);
        }
        let h = ProjectionInput::new(&h);
        let (gate, up) = if self.config.fused_projections {
            let both = b.linear(Role::GateUp).forward(&h, track)?;
            let f = self.config.intermediate_size;
            (both.narrow(1, 0, f)?, both.narrow(1, f, f)?)
        } else {
            (
                b.linear(Role::Gate).forward(&h, track)?,
                b.linear(Role::Up).forward(&h, track)?,
            )
        };
        let act = match self.config.activation {
            Activation::Silu => gate.silu()?,
            Activation::GeluTanh => gelu_tanh(&gate)?,
        };
        let inner = (act * up)?;
        let mut m = b
            .linear(Role::Down)
            .forward(&ProjectionInput::new(&inner), track)?;
        if let Some(w) = &b.post_mlp_norm {
            m = rms_norm(&m, w, eps)?;
        }
        Ok((x + m)?)
    }

    fn attention(
        &self,
        b: &Block,
        h: &Tensor,
        ctx: &BatchContext,
        batch: &Packed,
        track: bool,
    ) -> Result<Tensor> {
        let c = &self.config;
        let (heads, kv, hd) = (c.num_attention_heads, c.num_key_value_heads, c.head_dim);
        let groups = heads / kv;
        let n = h.dim(0)?;
        let eps = c.rms_norm_eps;
        let h = ProjectionInput::new(h);
        let (q, k, v) = if c.fused_projections {
            let qkv = b.linear(Role::Qkv).forward(&h, track)?;
            let (qw, kvw) = (c.q_width(), c.kv_width());
            (
                qkv.narrow(1, 0, qw)?,
                qkv.narrow(1, qw, kvw)?,
                qkv.narrow(1, qw + kvw, kvw)?,
            )
        } else {
            (
                b.linear(Role::Q).forward(&h, track)?,
                b.linear(Role::K).forward(&h, track)?,
                b.linear(Role::V).forward(&h, track)?,
            )
        };
        let mut q = q.reshape((n, heads, hd))?;
        let mut k = k.reshape((n, kv, hd))?;
        let v = v.reshape((n, kv, hd))?;
        if let (Some(qn), Some(kn)) = (&b.q_norm, &b.k_norm) {
            q = rms_norm(&q, qn, eps)?;
            k = rms_norm(&k, kn, eps)?;
        }
        let (cos, sin) = &ctx.ropes[b.layer.rope];
        let q = rope(&q, cos, sin)?;
        let k = rope(&k, cos, sin)?;
        let spec = AttentionSpec {
            scale: c.attention_scale,
            softcap: c.attn_logit_softcap,
            window: b.layer.window,
            block: ctx.block,
        };
        let mask = &ctx.masks[&b.layer.window];
        let sinks = match &b.sinks {
            Some(s) => Some(s.to_dtype(mask.band.dtype())?.reshape((kv, groups, 1, 1))?),
            None => None,
        };
        let mut outputs = Vec::with_capacity(batch.segments.len());
        for &(start, len) in &batch.segments {
            // Query heads that share a key/value head sit next to each other (transformers' repeat_kv),
            // so [heads, len, hd] regroups as [kv, groups, len, hd] without copying keys or values.
            let qs = q
                .narrow(0, start, len)?
                .transpose(0, 1)?
                .contiguous()?
                .reshape((kv, groups, len, hd))?;
            let ks = k.narrow(0, start, len)?.transpose(0, 1)?.contiguous()?;
            let vs = v.narrow(0, start, len)?.transpose(0, 1)?.contiguous()?;
            let out = blocked_attention(&qs, &ks, &vs, &spec, mask, sinks.as_ref(), track)?
                .reshape((heads, len, hd))?
                .transpose(0, 1)?
                .reshape((len, heads * hd))?;
            outputs.push(out);
        }
        Ok(Tensor::cat(&outputs, 0)?)
    }
}
