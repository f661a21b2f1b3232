//! RMSNorm as one CPU op: `y = x / sqrt(mean(x^2) + eps) * w` per row, rows in parallel, with a hand-written
//! backward for `x` (the weight is frozen): `dx = r * (g * w) - x * r^3 * mean(g * w * x)`, `r` the inverse
//! RMS. The primitive version keeps five intermediates per norm alive for the backward; this keeps none
//! beyond its input.

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::error::Result;
use crate::kernels::{Real, contiguous};

struct RmsNorm {
    /// `[hidden]`, the same dtype as the input.
    weight: Tensor,
    eps: f64,
}

/// Inverse RMS of a row, accumulated in f64.
fn inv_rms<T: Real>(x: &[T], eps: f64) -> f64 {
    let mean = x.iter().map(|v| (*v).into().powi(2)).sum::<f64>() / x.len() as f64;
    1.0 / (mean + eps).sqrt()
}

/// The inverse RMS of every `d`-wide row of `x` into `inv`.
pub(crate) fn inv_rms_rows<T: Real>(x: &[T], d: usize, eps: f64, inv: &mut [f64]) {
    inv.par_iter_mut()
        .zip(x.par_chunks(d))
        .for_each(|(r, x)| *r = inv_rms(x, eps));
}

/// `out = x * inv * w` per row, given each row's inverse RMS.
pub(crate) fn apply_rows<T: Real>(x: &[T], w: &[T], inv: &[f64], out: &mut [T]) {
    let d = w.len();
    out.par_chunks_mut(d)
        .zip(x.par_chunks(d).zip(inv.par_iter()))
        .for_each(|(o, (x, r))| {
            for ((o, x), w) in o.iter_mut().zip(x).zip(w) {
                *o = T::from_f64((*x).into() * r * (*w).into());
            }
        });
}

/// `out += x * inv * w` per row (a norm whose output is added to a residual).
pub(crate) fn apply_rows_add<T: Real>(x: &[T], w: &[T], inv: &[f64], out: &mut [T]) {
    let d = w.len();
    out.par_chunks_mut(d)
        .zip(x.par_chunks(d).zip(inv.par_iter()))
        .for_each(|(o, (x, r))| {
            for ((o, x), w) in o.iter_mut().zip(x).zip(w) {
                *o = T::from_f64((*o).into() + (*x).into() * r * (*w).into());
            }
        });
}

/// The input gradient of the norm per row, written into `dx` or added to it with `accumulate`.
pub(crate) fn backward_rows<T: Real>(
    x: &[T],
    w: &[T],
    inv: &[f64],
    g: &[T],
    dx: &mut [T],
    accumulate: bool,
) {
    let d = w.len();
    dx.par_chunks_mut(d)
        .zip(x.par_chunks(d).zip(g.par_chunks(d)).zip(inv.par_iter()))
        .for_each(|(o, ((x, g), r))| {
            let dot = x
                .iter()
                .zip(g)
                .zip(w)
                .map(|((x, g), w)| (*x).into() * (*g).into() * (*w).into())
                .sum::<f64>()
                / d as f64;
            for (((o, x), g), w) in o.iter_mut().zip(x).zip(g).zip(w) {
                let gw = (*g).into() * (*w).into();
                let v = r * gw - (*x).into() * r * r * r * dot;
                *o = if accumulate {
                    T::from_f64((*o).into() + v)
                } else {
                    T::from_f64(v)
                };
            }
        });
}

fn forward<T: Real>(x: &[T], w: &[T], eps: f64) -> Vec<T> {
    let mut inv = vec![0.0; x.len() / w.len()];
    inv_rms_rows(x, w.len(), eps, &mut inv);
    let mut out = vec![T::ZERO; x.len()];
    apply_rows(x, w, &inv, &mut out);
    out
}

fn backward<T: Real>(x: &[T], w: &[T], g: &[T], eps: f64) -> Vec<T> {
    let mut inv = vec![0.0; x.len() / w.len()];
    inv_rms_rows(x, w.len(), eps, &mut inv);
    let mut out = vec![T::ZERO; x.len()];
    backward_rows(x, w, &inv, g, &mut out, false);
    out
}

impl CustomOp1 for RmsNorm {
    fn name(&self) -> &'static str {
        "rms-norm"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let shape = layout.shape().clone();
        let out = match storage {
            CpuStorage::F32(x) => CpuStorage::F32(forward(
                contiguous(x, layout, self.name())?,
                &self.weight.to_vec1::<f32>()?,
                self.eps,
            )),
            CpuStorage::F64(x) => CpuStorage::F64(forward(
                contiguous(x, layout, self.name())?,
                &self.weight.to_vec1::<f64>()?,
                self.eps,
            )),
            _ => candle_core::bail!("rms norm: f32 or f64 only on the cpu"),
        };
        Ok((out, shape))
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let shape = arg.shape().clone();
        let device = arg.device().clone();
        let (x, g) = (arg.flatten_all()?, grad.flatten_all()?);
        let out = match arg.dtype() {
            candle_core::DType::F32 => {
                let w = self.weight.to_vec1::<f32>()?;
                let dx = backward(&x.to_vec1::<f32>()?, &w, &g.to_vec1::<f32>()?, self.eps);
                Tensor::from_vec(dx, shape, &device)?
            }
            candle_core::DType::F64 => {
                let w = self.weight.to_vec1::<f64>()?;
                let dx = backward(&x.to_vec1::<f64>()?, &w, &g.to_vec1::<f64>()?, self.eps);
                Tensor::from_vec(dx, shape, &device)?
            }
            other => candle_core::bail!("rms norm: no backward for {other:?}"),
        };
        Ok(Some(out))
    }
}

/// The fused norm where it applies (CPU, f32/f64, `x [.., hidden]`); `None` otherwise, so the caller uses
/// the primitive version.
pub fn fused_rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Option<Tensor>> {
    let dtype_ok = matches!(x.dtype(), candle_core::DType::F32 | candle_core::DType::F64);
    if !x.device().is_cpu() || !dtype_ok || weight.dtype() != x.dtype() {
        return Ok(None);
    }
    let op = RmsNorm {
        weight: weight.detach(),
        eps,
    };
    Ok(Some(x.contiguous()?.apply_op1(op)?))
}
