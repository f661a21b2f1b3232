//! Causal attention on the candle graph without `[len, len]` tensors: queries in blocks of rows against
//! the keys they see, the softmax's log-sum-exp kept per row, and a backward that recomputes each block's
//! probabilities from it (flash attention's scheme), built from ops with CUDA kernels (matmul, exp,
//! reductions). The graph keeps q, k, v, the output and the log-sum-exp: memory linear in the length,
//! plus one block's scores at a time. Held to the CPU engine in f64 by the tests.

use candle_core::{CpuStorage, CustomOp3, D, DType, Device, Layout, Shape, Storage, Tensor};
use std::sync::Mutex;

use crate::error::Result;

/// Elements of one block's scores (`heads x rows x keys`) the automatic block size stays under: 128 MB
/// of f32 per copy.
const BLOCK_SCORE_ELEMENTS: usize = 1 << 25;

/// Query rows per block for `heads` query heads and sequences of up to `max_len` tokens: a power of two
/// from 64 to 1024, the largest whose scores stay under [`BLOCK_SCORE_ELEMENTS`].
pub(crate) fn auto_block_rows(heads: usize, max_len: usize) -> usize {
    let mut rows = 1024;
    while rows > 64 && heads * rows * max_len.max(1) > BLOCK_SCORE_ELEMENTS {
        rows /= 2;
    }
    rows
}

/// What the scores of a layer are: `softcap(q k^T * scale)` (or `q k^T * scale`), keys in a window.
#[derive(Clone, Copy, Debug)]
pub(crate) struct AttentionSpec {
    pub scale: f64,
    pub softcap: Option<f64>,
    pub window: Option<usize>,
    /// Query rows per block.
    pub block: usize,
}

/// The additive masks of every query block for one window, as views of one band
/// `[block, max_len + block]` built once per batch: row `a`, column `c` is open when
/// `max_len + a - window < c <= max_len + a`.
#[derive(Clone)]
pub(crate) struct MaskBand {
    pub(crate) band: Tensor,
    shift: usize,
}

impl MaskBand {
    pub fn new(
        block: usize,
        max_len: usize,
        window: Option<usize>,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let width = max_len + block;
        let mut values = vec![f32::NEG_INFINITY; block * width];
        for a in 0..block {
            let last = max_len + a;
            let first = window.map_or(0, |w| (last + 1).saturating_sub(w));
            values[a * width + first..=a * width + last].fill(0.0);
        }
        let band = Tensor::from_vec(values, (block, width), device)?.to_dtype(dtype)?;
        Ok(MaskBand {
            band,
            shift: max_len,
        })
    }

    /// The mask `[rows, keys]` of query rows `r0..r0 + rows` against keys `r0 - offset..`.
    fn view(&self, rows: usize, offset: usize, keys: usize) -> Result<Tensor> {
        Ok(self
            .band
            .narrow(0, 0, rows)?
            .narrow(1, self.shift - offset, keys)?)
    }
}

/// One query block: rows `start..start + rows` against keys `first..start + rows`.
#[derive(Clone, Copy)]
struct QueryBlock {
    start: usize,
    rows: usize,
    first: usize,
}

impl QueryBlock {
    fn all(len: usize, spec: &AttentionSpec) -> impl Iterator<Item = QueryBlock> + '_ {
        (0..len).step_by(spec.block).map(move |start| QueryBlock {
            start,
            rows: spec.block.min(len - start),
            first: spec.window.map_or(0, |w| (start + 1).saturating_sub(w)),
        })
    }

    fn keys(&self) -> usize {
        self.start + self.rows - self.first
    }
}

/// The block's pieces of `q [kv, groups, len, hd]` (as `[kv, groups * rows, hd]`) and of `k`, `v`
/// `[kv, len, hd]` (as `[kv, keys, hd]`).
fn block_inputs(
    blk: QueryBlock,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
) -> Result<(Tensor, Tensor, Tensor)> {
    let (kv, groups, _, hd) = q.dims4()?;
    let qb =
        q.narrow(2, blk.start, blk.rows)?
            .contiguous()?
            .reshape((kv, groups * blk.rows, hd))?;
    let kb = k.narrow(1, blk.first, blk.keys())?.contiguous()?;
    let vb = v.narrow(1, blk.first, blk.keys())?.contiguous()?;
    Ok((qb, kb, vb))
}

/// Masked scores `[kv, groups, rows, keys]` in the compute dtype, and the derivative of the scores with
/// respect to `q k^T` (a tensor under a soft-cap, else the scale).
fn block_scores(
    spec: &AttentionSpec,
    blk: QueryBlock,
    qb: &Tensor,
    kb: &Tensor,
    mask: &MaskBand,
    groups: usize,
) -> Result<(Tensor, Option<Tensor>)> {
    let raw = qb.matmul(&kb.t()?)?.to_dtype(mask.band.dtype())?;
    let (scores, slope) = match spec.softcap {
        Some(cap) => {
            let t = ((raw * (spec.scale / cap))?).tanh()?;
            let slope = ((t.sqr()?.neg()? + 1.0)? * spec.scale)?;
            ((t * cap)?, Some(slope))
        }
        None => ((raw * spec.scale)?, None),
    };
    let (kv, _, keys) = scores.dims3()?;
    let masked = scores
        .reshape((kv, groups, blk.rows, keys))?
        .broadcast_add(&mask.view(blk.rows, blk.start - blk.first, keys)?)?;
    Ok((masked, slope))
}

/// `softmax(scores) v` per query block, and the log-sum-exp of each row `[kv, groups, len, 1]`; with
/// `sinks [kv, groups, 1, 1]` (in the compute dtype) each row's softmax also counts its head's sink logit,
/// which attends to nothing. The backward reads only the log-sum-exp, so it is the same with sinks.
fn forward(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    spec: &AttentionSpec,
    mask: &MaskBand,
    sinks: Option<&Tensor>,
) -> Result<(Tensor, Tensor)> {
    let (kv, groups, len, hd) = q.dims4()?;
    let mut outputs = Vec::new();
    let mut lses = Vec::new();
    for blk in QueryBlock::all(len, spec) {
        let (qb, kb, vb) = block_inputs(blk, q, k, v)?;
        let (scores, _) = block_scores(spec, blk, &qb, &kb, mask, groups)?;
        let mut max = scores.max_keepdim(D::Minus1)?;
        if let Some(sinks) = sinks {
            max = max.broadcast_maximum(sinks)?;
        }
        let e = scores.broadcast_sub(&max)?.exp()?;
        let mut sum = e.sum_keepdim(D::Minus1)?;
        if let Some(sinks) = sinks {
            sum = (sum + sinks.broadcast_sub(&max)?.exp()?)?;
        }
        let probs = e.broadcast_div(&sum)?.to_dtype(q.dtype())?.reshape((
            kv,
            groups * blk.rows,
            blk.keys(),
        ))?;
        outputs.push(probs.matmul(&vb)?.reshape((kv, groups, blk.rows, hd))?);
        lses.push((max + sum.log()?)?);
    }
    Ok((Tensor::cat(&outputs, 2)?, Tensor::cat(&lses, 2)?))
}

/// The graph node: its forward hands back the output computed before it (detached), its backward
/// recomputes the probabilities block by block from the log-sum-exp.
struct BlockedAttention {
    spec: AttentionSpec,
    /// Taken by the forward.
    output: Mutex<Option<Tensor>>,
    lse: Tensor,
    mask: MaskBand,
}

impl BlockedAttention {
    fn output(&self) -> candle_core::Result<(Storage, Shape)> {
        let out = self
            .output
            .lock()
            .map_err(|_| candle_core::Error::Msg("blocked attention: poisoned".into()))?
            .take()
            .ok_or_else(|| {
                candle_core::Error::Msg("blocked attention: forward ran twice".into())
            })?;
        crate::frozen::owned_storage(&out)
    }

    fn backward(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        out: &Tensor,
        grad: &Tensor,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let (q, k, v) = (q.detach(), k.detach(), v.detach());
        let (kv, groups, len, hd) = q.dims4()?;
        let mask = &self.mask;
        let cdt = mask.band.dtype();
        let grad = grad.detach().contiguous()?;
        // D = rowsum(dO * O): the softmax backward's per-row term.
        let delta = (grad.to_dtype(cdt)? * out.detach().to_dtype(cdt)?)?.sum_keepdim(D::Minus1)?;
        let mut dq = Vec::new();
        let mut dk = Tensor::zeros((kv, len, hd), cdt, q.device())?;
        let mut dv = dk.clone();
        for blk in QueryBlock::all(len, &self.spec) {
            let (qb, kb, vb) = block_inputs(blk, &q, &k, &v)?;
            let (scores, slope) = block_scores(&self.spec, blk, &qb, &kb, mask, groups)?;
            let lse = self.lse.narrow(2, blk.start, blk.rows)?;
            let probs = scores.broadcast_sub(&lse)?.exp()?;
            let gb = grad
                .narrow(2, blk.start, blk.rows)?
                .contiguous()?
                .reshape((kv, groups * blk.rows, hd))?;
            let dprobs = gb.matmul(&vb.t()?)?.to_dtype(cdt)?.reshape(probs.shape())?;
            let dscores =
                (&probs * dprobs.broadcast_sub(&delta.narrow(2, blk.start, blk.rows)?)?)?;
            let draw = match &slope {
                Some(s) => (dscores.reshape(s.shape())? * s)?,
                None => (dscores * self.spec.scale)?,
            };
            let keys = blk.keys();
            let draw = draw
                .to_dtype(q.dtype())?
                .reshape((kv, groups * blk.rows, keys))?;
            let probs = probs
                .to_dtype(q.dtype())?
                .reshape((kv, groups * blk.rows, keys))?;
            dq.push(draw.matmul(&kb)?.reshape((kv, groups, blk.rows, hd))?);
            let (left, right) = (blk.first, len - blk.first - keys);
            let dk_part = draw.t()?.matmul(&qb)?.to_dtype(cdt)?;
            dk = (dk + dk_part.pad_with_zeros(1, left, right)?)?;
            let dv_part = probs.t()?.matmul(&gb)?.to_dtype(cdt)?;
            dv = (dv + dv_part.pad_with_zeros(1, left, right)?)?;
        }
        Ok((
            Tensor::cat(&dq, 2)?,
            dk.to_dtype(k.dtype())?,
            dv.to_dtype(v.dtype())?,
        ))
    }
}

impl CustomOp3 for BlockedAttention {
    fn name(&self) -> &'static str {
        "blocked-attention"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        match self.output()? {
            (Storage::Cpu(s), shape) => Ok((s, shape)),
            _ => candle_core::bail!("blocked attention: output not on the cpu"),
        }
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        _: &candle_core::CudaStorage,
        _: &Layout,
        _: &candle_core::CudaStorage,
        _: &Layout,
        _: &candle_core::CudaStorage,
        _: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        match self.output()? {
            (Storage::Cuda(s), shape) => Ok((s, shape)),
            _ => candle_core::bail!("blocked attention: output not on the gpu"),
        }
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        out: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dq, dk, dv) = self
            .backward(q, k, v, out, grad)
            .map_err(|e| candle_core::Error::Msg(format!("blocked attention backward: {e}")))?;
        Ok((Some(dq), Some(dk), Some(dv)))
    }
}

/// Causal attention of `q [kv, groups, len, hd]` (query heads grouped by the key/value head they share)
/// against `k`, `v [kv, len, hd]`: `[kv, groups, len, hd]`. With `track`, the result records a backward
/// that keeps no `[len, len]` tensor.
pub(crate) fn blocked_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    spec: &AttentionSpec,
    mask: &MaskBand,
    sinks: Option<&Tensor>,
    track: bool,
) -> Result<Tensor> {
    let (out, lse) = forward(&q.detach(), &k.detach(), &v.detach(), spec, mask, sinks)?;
    if !track || !(q.track_op() || k.track_op() || v.track_op()) {
        return Ok(out);
    }
    let op = BlockedAttention {
        spec: *spec,
        output: Mutex::new(Some(out)),
        lse,
        mask: mask.clone(),
    };
    Ok(q.apply_op3(k, v, op)?)
}
