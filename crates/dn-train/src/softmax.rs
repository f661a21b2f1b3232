//! Causal softmax as one op: masking (key `j` > query `i`, or outside the sliding window, gets probability
//! 0), max-shift, exp and normalise in
//! a single pass per row, parallel across rows, keeping only the output for the backward
//! (`dx = p * (g - sum(g * p))`). The primitive version keeps the scaled scores, the masked scores, the
//! shifted scores, their exponentials and the probabilities alive for the backward, five tensors of
//! `heads x len x len` per layer, and computes a useless gradient for the broadcast mask.

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::error::Result;
use crate::kernels::{Real, contiguous};

/// Rows of `[.., rows, len]` scores where row `r` is query position `r % len`.
struct CausalSoftmax {
    len: usize,
    scale: f64,
    window: Option<usize>,
}

/// The keys query `i` sees: `lo..=i`.
fn visible(i: usize, window: Option<usize>) -> std::ops::Range<usize> {
    window.map_or(0, |w| (i + 1).saturating_sub(w))..i + 1
}

fn forward_rows<T: Real>(input: &[T], len: usize, scale: T, window: Option<usize>) -> Vec<T> {
    let mut out = vec![T::ZERO; input.len()];
    out.par_chunks_mut(len)
        .zip(input.par_chunks(len))
        .enumerate()
        .for_each(|(row, (o, x))| {
            let seen = visible(row % len, window);
            let o = &mut o[seen.clone()];
            // Scaled first, then shifted, as `softmax(q k^T * scale)` computes it.
            for (o, x) in o.iter_mut().zip(&x[seen]) {
                *o = *x * scale;
            }
            let max = o.iter().copied().fold(T::NEG_INFINITY, T::maximum);
            let mut sum = T::ZERO;
            for o in o.iter_mut() {
                *o = (*o - max).exp();
                sum += *o;
            }
            let inv = T::ONE / sum;
            for o in o.iter_mut() {
                *o *= inv;
            }
        });
    out
}

fn backward_rows<T: Real>(p: &[T], g: &[T], len: usize, scale: T, window: Option<usize>) -> Vec<T> {
    let mut out = vec![T::ZERO; p.len()];
    out.par_chunks_mut(len)
        .zip(p.par_chunks(len).zip(g.par_chunks(len)))
        .enumerate()
        .for_each(|(row, (o, (p, g)))| {
            let seen = visible(row % len, window);
            let (p, g) = (&p[seen.clone()], &g[seen.clone()]);
            let dot = p.iter().zip(g).fold(T::ZERO, |acc, (p, g)| acc + *p * *g);
            for ((o, p), g) in o[seen].iter_mut().zip(p).zip(g) {
                *o = *p * (*g - dot) * scale;
            }
        });
    out
}

impl CustomOp1 for CausalSoftmax {
    fn name(&self) -> &'static str {
        "causal-softmax"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let shape = layout.shape().clone();
        let out = match storage {
            CpuStorage::F32(data) => CpuStorage::F32(forward_rows(
                contiguous(data, layout, self.name())?,
                self.len,
                self.scale as f32,
                self.window,
            )),
            CpuStorage::F64(data) => CpuStorage::F64(forward_rows(
                contiguous(data, layout, self.name())?,
                self.len,
                self.scale,
                self.window,
            )),
            _ => candle_core::bail!("causal softmax: f32 or f64 only on the cpu"),
        };
        Ok((out, shape))
    }

    fn bwd(
        &self,
        _arg: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let (p, g) = (res.contiguous()?, grad.contiguous()?);
        let shape = p.shape().clone();
        let device = p.device().clone();
        let out = match p.dtype() {
            candle_core::DType::F32 => {
                let (p, g) = (
                    p.flatten_all()?.to_vec1::<f32>()?,
                    g.flatten_all()?.to_vec1::<f32>()?,
                );
                Tensor::from_vec(
                    backward_rows(&p, &g, self.len, self.scale as f32, self.window),
                    shape,
                    &device,
                )?
            }
            candle_core::DType::F64 => {
                let (p, g) = (
                    p.flatten_all()?.to_vec1::<f64>()?,
                    g.flatten_all()?.to_vec1::<f64>()?,
                );
                Tensor::from_vec(
                    backward_rows(&p, &g, self.len, self.scale, self.window),
                    shape,
                    &device,
                )?
            }
            other => candle_core::bail!("causal softmax: no backward for {other:?}"),
        };
        Ok(Some(out))
    }
}

/// `softmax(scores * scale)` over the last dimension of `scores [.., rows, len]` with the causal mask (and
/// sliding window) of row `r` at query position `r % len`; `None` where this op does not apply (not on the
/// CPU, or half precision), so the caller falls back to the primitive version.
pub fn causal_softmax(
    scores: &Tensor,
    scale: f64,
    window: Option<usize>,
) -> Result<Option<Tensor>> {
    let dtype_ok = matches!(
        scores.dtype(),
        candle_core::DType::F32 | candle_core::DType::F64
    );
    if !scores.device().is_cpu() || !dtype_ok {
        return Ok(None);
    }
    let len = scores.dim(candle_core::D::Minus1)?;
    Ok(Some(scores.contiguous()?.apply_op1(CausalSoftmax {
        len,
        scale,
        window,
    })?))
}
