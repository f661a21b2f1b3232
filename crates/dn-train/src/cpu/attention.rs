//! Causal attention per packed example, forward and backward, without materialising anything per layer
//! beyond the output and one log-sum-exp per (token, head): the backward recomputes the probabilities from
//! `q`, `k` and that log-sum-exp (as flash attention does). Work units are (example, head) in the forward
//! and (example, key/value head) in the backward, in parallel; each unit's products run on one thread.

use rayon::prelude::*;

use super::matmul::{Mat, MatMut, Threads, matmul};
use crate::kernels::Real;

/// Head layout of the packed `q [n, heads * hd]`, `k`/`v [n, kv * hd]` rows.
#[derive(Clone, Copy)]
pub struct Heads {
    pub heads: usize,
    pub kv: usize,
    pub hd: usize,
}

impl Heads {
    fn q_width(&self) -> usize {
        self.heads * self.hd
    }

    fn kv_width(&self) -> usize {
        self.kv * self.hd
    }

    fn groups(&self) -> usize {
        self.heads / self.kv
    }

    fn scale<T: Real>(&self) -> T {
        T::from_f64(1.0 / (self.hd as f64).sqrt())
    }
}

/// Scores `q_h k_g^T * scale` of one example into `s [len, len]`.
#[allow(clippy::too_many_arguments)]
fn scores<T: Real>(s: &mut [T], q: &[T], k: &[T], h: usize, start: usize, len: usize, l: Heads) {
    let g = h / l.groups();
    let qh = Mat::strided(q, start * l.q_width() + h * l.hd, len, l.hd, l.q_width());
    let kg = Mat::strided(k, start * l.kv_width() + g * l.hd, len, l.hd, l.kv_width());
    matmul(
        MatMut::new(s, len, len),
        qh,
        kg.t(),
        l.scale(),
        false,
        Threads::One,
    );
}

/// Output `[n, heads * hd]` and log-sum-exp `[n, heads]` of causal attention within each segment.
pub fn forward<T: Real>(
    q: &[T],
    k: &[T],
    v: &[T],
    segments: &[(usize, usize)],
    l: Heads,
    out: &mut [T],
    lse: &mut [T],
) {
    let units: Vec<(usize, usize, usize)> = segments
        .iter()
        .flat_map(|&(start, len)| (0..l.heads).map(move |h| (start, len, h)))
        .collect();
    let results: Vec<(Vec<T>, Vec<T>)> = units
        .par_iter()
        .map(|&(start, len, h)| {
            let mut s = vec![T::ZERO; len * len];
            scores(&mut s, q, k, h, start, len, l);
            let mut row_lse = vec![T::ZERO; len];
            for (i, row) in s.chunks_mut(len).enumerate() {
                let visible = &mut row[..=i];
                let max = visible.iter().copied().fold(T::NEG_INFINITY, T::maximum);
                let mut sum = T::ZERO;
                for p in visible.iter_mut() {
                    *p = (*p - max).exp();
                    sum += *p;
                }
                let inv = T::ONE / sum;
                for p in visible.iter_mut() {
                    *p *= inv;
                }
                row[i + 1..].fill(T::ZERO);
                row_lse[i] = max + sum.ln();
            }
            let g = h / l.groups();
            let vg = Mat::strided(v, start * l.kv_width() + g * l.hd, len, l.hd, l.kv_width());
            let mut o = vec![T::ZERO; len * l.hd];
            let dst = MatMut::new(&mut o, len, l.hd);
            matmul(dst, Mat::new(&s, len, len), vg, T::ONE, false, Threads::One);
            (o, row_lse)
        })
        .collect();
    for (&(start, _, h), (o, row_lse)) in units.iter().zip(results) {
        for (i, (row, lse_i)) in o.chunks(l.hd).zip(row_lse).enumerate() {
            let at = (start + i) * l.q_width() + h * l.hd;
            out[at..at + l.hd].copy_from_slice(row);
            lse[(start + i) * l.heads + h] = lse_i;
        }
    }
}

/// What the backward reads: the forward's inputs, output and log-sum-exp.
pub struct Saved<'a, T> {
    pub q: &'a [T],
    pub k: &'a [T],
    pub v: &'a [T],
    pub out: &'a [T],
    pub lse: &'a [T],
}

/// Gradients of `q`, `k`, `v` from the output gradient `d_out [n, heads * hd]`.
pub fn backward<T: Real>(
    saved: &Saved<'_, T>,
    d_out: &[T],
    segments: &[(usize, usize)],
    l: Heads,
    dq: &mut [T],
    dk: &mut [T],
    dv: &mut [T],
) {
    let units: Vec<(usize, usize, usize)> = segments
        .iter()
        .flat_map(|&(start, len)| (0..l.kv).map(move |g| (start, len, g)))
        .collect();
    let results: Vec<(Vec<T>, Vec<T>, Vec<T>)> = units
        .par_iter()
        .map(|&(start, len, g)| unit_backward(saved, d_out, start, len, g, l))
        .collect();
    let groups = l.groups();
    for (&(start, len, g), (dq_u, dk_u, dv_u)) in units.iter().zip(results) {
        for i in 0..len {
            let row = start + i;
            for j in 0..groups {
                let h = g * groups + j;
                let from = (j * len + i) * l.hd;
                let at = row * l.q_width() + h * l.hd;
                dq[at..at + l.hd].copy_from_slice(&dq_u[from..from + l.hd]);
            }
            let at = row * l.kv_width() + g * l.hd;
            dk[at..at + l.hd].copy_from_slice(&dk_u[i * l.hd..(i + 1) * l.hd]);
            dv[at..at + l.hd].copy_from_slice(&dv_u[i * l.hd..(i + 1) * l.hd]);
        }
    }
}

/// One example's gradients for the query heads sharing key/value head `g`: `dq [groups, len, hd]`,
/// `dk`, `dv [len, hd]`.
fn unit_backward<T: Real>(
    saved: &Saved<'_, T>,
    d_out: &[T],
    start: usize,
    len: usize,
    g: usize,
    l: Heads,
) -> (Vec<T>, Vec<T>, Vec<T>) {
    let groups = l.groups();
    let (qw, kw) = (l.q_width(), l.kv_width());
    let mut dq = vec![T::ZERO; groups * len * l.hd];
    let mut dk = vec![T::ZERO; len * l.hd];
    let mut dv = vec![T::ZERO; len * l.hd];
    let mut p = vec![T::ZERO; len * len];
    let mut dp = vec![T::ZERO; len * len];
    let kg = Mat::strided(saved.k, start * kw + g * l.hd, len, l.hd, kw);
    let vg = Mat::strided(saved.v, start * kw + g * l.hd, len, l.hd, kw);
    for j in 0..groups {
        let h = g * groups + j;
        let first = j == 0;
        scores(&mut p, saved.q, saved.k, h, start, len, l);
        for (i, row) in p.chunks_mut(len).enumerate() {
            let lse = saved.lse[(start + i) * l.heads + h];
            for s in &mut row[..=i] {
                *s = (*s - lse).exp();
            }
            row[i + 1..].fill(T::ZERO);
        }
        let d_oh = Mat::strided(d_out, start * qw + h * l.hd, len, l.hd, qw);
        let qh = Mat::strided(saved.q, start * qw + h * l.hd, len, l.hd, qw);
        // dV += P^T dO
        let dst = MatMut::new(&mut dv, len, l.hd);
        matmul(
            dst,
            Mat::new(&p, len, len).t(),
            d_oh,
            T::ONE,
            !first,
            Threads::One,
        );
        // dP = dO V^T, then dS = P * (dP - rowsum(dO * O)).
        let dst = MatMut::new(&mut dp, len, len);
        matmul(dst, d_oh, vg.t(), T::ONE, false, Threads::One);
        for i in 0..len {
            let at = (start + i) * qw + h * l.hd;
            let o = &saved.out[at..at + l.hd];
            let g_o = &d_out[at..at + l.hd];
            let dot = o.iter().zip(g_o).fold(T::ZERO, |acc, (a, b)| acc + *a * *b);
            let (p_row, dp_row) = (&p[i * len..(i + 1) * len], &mut dp[i * len..(i + 1) * len]);
            for (d, p) in dp_row[..=i].iter_mut().zip(&p_row[..=i]) {
                *d = *p * (*d - dot);
            }
            dp_row[i + 1..].fill(T::ZERO);
        }
        let ds = Mat::new(&dp, len, len);
        let dst = MatMut::new(&mut dq[j * len * l.hd..(j + 1) * len * l.hd], len, l.hd);
        matmul(dst, ds, kg, l.scale(), false, Threads::One);
        let dst = MatMut::new(&mut dk, len, l.hd);
        matmul(dst, ds.t(), qh, l.scale(), !first, Threads::One);
    }
    (dq, dk, dv)
}
