//! A frozen projection (`x w^T`, an optional frozen bias) with its optional LoRA pair, forward and
//! backward on borrowed slices; and the column splits of fused projections (Phi-3's `qkv_proj` and
//! `gate_up_proj`).

use std::borrow::Cow;

use rayon::prelude::*;

use super::matmul::{FEW_ROWS, Mat, MatMut, Threads, few_rows_quantized_wt, matmul, rows_times_wt};
use crate::kernels::Real;
use crate::quant::QuantRows;

/// A LoRA pair's tensors: `a [rank, in]`, `b [out, rank]`, applied as `scale * (x a^T) b^T`.
pub struct Lora<'a, T> {
    pub a: &'a [T],
    pub b: &'a [T],
    pub rank: usize,
    pub scale: T,
}

/// A frozen `[out, in]` weight: dense, or kept quantized and decoded for each product (into a buffer
/// freed after it: at most one projection decoded at a time).
#[derive(Clone, Copy)]
pub enum Weight<'a, T> {
    Dense(&'a [T]),
    Quantized(QuantRows<'a>),
}

impl<'a, T: Real> Weight<'a, T> {
    fn values(self) -> Cow<'a, [T]> {
        match self {
            Weight::Dense(w) => Cow::Borrowed(w),
            Weight::Quantized(q) => {
                let mut decoded = vec![T::ZERO; q.rows * q.cols()];
                q.decode_rows_as(0, &mut decoded);
                Cow::Owned(decoded)
            }
        }
    }
}

/// A frozen projection `w [out, in]`, its optional bias `[out]` and LoRA pair.
pub struct Proj<'a, T> {
    pub w: Weight<'a, T>,
    pub bias: Option<&'a [T]>,
    pub out: usize,
    pub inp: usize,
    pub lora: Option<Lora<'a, T>>,
}

/// The gradients of one LoRA pair, summed over the passes of a step.
pub struct LoraGrad<T> {
    pub a: Vec<T>,
    pub b: Vec<T>,
}

impl<T: Real> Proj<'_, T> {
    pub fn grad(&self) -> Option<LoraGrad<T>> {
        self.lora.as_ref().map(|l| LoraGrad {
            a: vec![T::ZERO; l.rank * self.inp],
            b: vec![T::ZERO; self.out * l.rank],
        })
    }

    /// `y (+)= x w^T + bias + scale * (x a^T) b^T` for `x [n, in]`; `x a^T` goes to `u`.
    pub fn forward(&self, x: &[T], n: usize, y: &mut [T], accumulate: bool, u: &mut Vec<T>) {
        match self.w {
            // A few rows (decoding): each weight row decoded and used at once.
            Weight::Quantized(q) if n <= FEW_ROWS => few_rows_quantized_wt(y, x, n, q, accumulate),
            w => rows_times_wt(y, x, n, &w.values(), self.out, self.inp, T::ONE, accumulate),
        }
        if let Some(bias) = self.bias {
            y.par_chunks_mut(self.out).for_each(|row| {
                for (y, b) in row.iter_mut().zip(bias) {
                    *y += *b;
                }
            });
        }
        if let Some(l) = &self.lora {
            u.clear();
            u.resize(n * l.rank, T::ZERO);
            rows_times_wt(u, x, n, l.a, l.rank, self.inp, T::ONE, false);
            rows_times_wt(y, u, n, l.b, self.out, l.rank, l.scale, true);
        }
    }

    /// `dx (+)= dy w + scale * (dy b) a`, and the LoRA gradients `da += scale * (dy b)^T x`,
    /// `db += scale * dy^T u` (the bias is frozen: no gradient).
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &self,
        x: &[T],
        dy: &[T],
        u: &[T],
        n: usize,
        dx: &mut [T],
        accumulate: bool,
        grad: Option<&mut LoraGrad<T>>,
        t: &mut Vec<T>,
    ) {
        let dy_m = Mat::new(dy, n, self.out);
        let w = self.w.values();
        let w = Mat::new(&w, self.out, self.inp);
        matmul(
            MatMut::new(dx, n, self.inp),
            dy_m,
            w,
            T::ONE,
            accumulate,
            Threads::All,
        );
        let (Some(l), Some(grad)) = (&self.lora, grad) else {
            return;
        };
        t.clear();
        t.resize(n * l.rank, T::ZERO);
        let b = Mat::new(l.b, self.out, l.rank);
        matmul(
            MatMut::new(t, n, l.rank),
            dy_m,
            b,
            T::ONE,
            false,
            Threads::All,
        );
        let t_m = Mat::new(t, n, l.rank);
        let a = Mat::new(l.a, l.rank, self.inp);
        matmul(
            MatMut::new(dx, n, self.inp),
            t_m,
            a,
            l.scale,
            true,
            Threads::All,
        );
        let x_m = Mat::new(x, n, self.inp);
        let dst = MatMut::new(&mut grad.a, l.rank, self.inp);
        matmul(dst, t_m.t(), x_m, l.scale, true, Threads::All);
        let dst = MatMut::new(&mut grad.b, self.out, l.rank);
        matmul(
            dst,
            dy_m.t(),
            Mat::new(u, n, l.rank),
            l.scale,
            true,
            Threads::All,
        );
    }
}

/// Copies the column blocks of `wide [n, sum(widths)]` into `parts` (each `[n, width]`).
pub fn split_columns<T: Copy + Send + Sync>(wide: &[T], n: usize, parts: &mut [&mut [T]]) {
    let widths: Vec<usize> = parts.iter().map(|p| p.len() / n.max(1)).collect();
    let total: usize = widths.iter().sum();
    let mut at = 0;
    for (part, width) in parts.iter_mut().zip(&widths) {
        part.par_chunks_mut(*width)
            .zip(wide.par_chunks(total))
            .for_each(|(dst, row)| dst.copy_from_slice(&row[at..at + width]));
        at += width;
    }
}

/// The inverse of [`split_columns`]: `parts` side by side into `wide`.
pub fn join_columns<T: Copy + Send + Sync>(parts: &[&[T]], n: usize, wide: &mut [T]) {
    let widths: Vec<usize> = parts.iter().map(|p| p.len() / n.max(1)).collect();
    let total: usize = widths.iter().sum();
    let mut at = 0;
    for (part, width) in parts.iter().zip(&widths) {
        wide.par_chunks_mut(total)
            .zip(part.par_chunks(*width))
            .for_each(|(row, src)| row[at..at + width].copy_from_slice(src));
        at += width;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_then_join_is_the_identity() {
        let n = 3;
        let wide: Vec<f64> = (0..n * 7).map(|i| i as f64).collect();
        let (mut a, mut b) = (vec![0.0; n * 4], vec![0.0; n * 3]);
        split_columns(&wide, n, &mut [&mut a, &mut b]);
        assert_eq!(a[..4], [0.0, 1.0, 2.0, 3.0]);
        assert_eq!(b[..3], [4.0, 5.0, 6.0]);
        assert_eq!(b[3..6], [11.0, 12.0, 13.0]);
        let mut back = vec![0.0; n * 7];
        join_columns(&[&a, &b], n, &mut back);
        assert_eq!(back, wide);
    }
}
