//! Causal attention per packed example, forward and backward, without materialising anything per layer
//! beyond the output and one log-sum-exp per (token, head): the backward recomputes the probabilities from
//! `q`, `k` and that log-sum-exp (as flash attention does), a block of query rows at a time. Work units are
//! (example, head) in the forward and (example, key/value head) in the backward, in parallel; each unit's
//! products run on one thread. A sliding window limits each query to its last `window` keys (blocks then
//! look only at the keys some row of theirs sees), and a soft-cap turns scores into `cap * tanh(s / cap)`
//! before the softmax.

use rayon::prelude::*;

use super::matmul::{Mat, MatMut, Threads, matmul};
use crate::kernels::Real;

/// Head layout of the packed `q [n, heads * hd]`, `k`/`v [n, kv * hd]` rows, and the layer's scoring.
#[derive(Clone, Copy)]
pub struct Heads<'a> {
    pub heads: usize,
    pub kv: usize,
    pub hd: usize,
    /// Query rows processed at once ([`QUERY_BLOCK`] outside tests).
    pub query_block: usize,
    /// Scores are `q k^T * scale`.
    pub scale: f64,
    pub softcap: Option<f64>,
    /// A query sees itself and the `window - 1` keys before it.
    pub window: Option<usize>,
    /// Each head's sink logit (gpt-oss): one more term in the softmax's denominator, attending to nothing.
    pub sinks: Option<&'a [f64]>,
}

impl Heads<'_> {
    /// Head `h`'s sink logit, if any.
    pub(super) fn sink<T: Real>(&self, h: usize) -> Option<T> {
        self.sinks.map(|s| T::from_f64(s[h]))
    }

    pub(super) fn q_width(&self) -> usize {
        self.heads * self.hd
    }

    pub(super) fn kv_width(&self) -> usize {
        self.kv * self.hd
    }

    pub(super) fn groups(&self) -> usize {
        self.heads / self.kv
    }

    fn scale<T: Real>(&self) -> T {
        T::from_f64(self.scale)
    }

    /// The first key any of the query rows `r0..` sees.
    pub(super) fn first_key(&self, r0: usize) -> usize {
        self.window.map_or(0, |w| (r0 + 1).saturating_sub(w))
    }

    /// The keys query `i` sees: `lo..=i`.
    pub(super) fn visible(&self, i: usize) -> std::ops::Range<usize> {
        self.first_key(i)..i + 1
    }
}

/// `cap * tanh(s / cap)` over the visible scores of a row (what the backward needs is recomputed).
fn cap_scores<T: Real>(row: &mut [T], softcap: Option<f64>) {
    if let Some(cap) = softcap {
        let cap = T::from_f64(cap);
        for s in row {
            *s = cap * (*s / cap).tanh();
        }
    }
}

/// Soft-caps and normalises the scores `row[lo..hi]` into probabilities, the rest of the row set to 0;
/// returns their log-sum-exp. A sink logit counts in the denominator (and the log-sum-exp, from which the
/// backward recomputes the probabilities) without a column of its own.
pub(super) fn softmax_visible<T: Real>(
    row: &mut [T],
    lo: usize,
    hi: usize,
    softcap: Option<f64>,
    sink: Option<T>,
) -> T {
    let visible = &mut row[lo..hi];
    cap_scores(visible, softcap);
    let mut max = visible.iter().copied().fold(T::NEG_INFINITY, T::maximum);
    if let Some(sink) = sink {
        max = max.maximum(sink);
    }
    let mut sum = sink.map_or(T::ZERO, |s| (s - max).exp());
    for p in visible.iter_mut() {
        *p = (*p - max).exp();
        sum += *p;
    }
    let inv = T::ONE / sum;
    for p in visible.iter_mut() {
        *p *= inv;
    }
    row[..lo].fill(T::ZERO);
    row[hi..].fill(T::ZERO);
    max + sum.ln()
}

/// Query rows processed at once: scores are `[QUERY_BLOCK, keys]`, and a block only looks at the keys up
/// to its last row (causality halves the work and keeps the scratch linear in the example's length).
pub const QUERY_BLOCK: usize = 128;

/// Scores `q_h k_g^T * scale` of query rows `r0..r0 + rows` of one example against its keys
/// `k0..r0 + rows`, into `s [rows, r0 + rows - k0]`.
#[allow(clippy::too_many_arguments)]
fn scores<T: Real>(
    s: &mut [T],
    q: &[T],
    k: &[T],
    h: usize,
    start: usize,
    r0: usize,
    rows: usize,
    l: Heads<'_>,
) {
    let g = h / l.groups();
    let k0 = l.first_key(r0);
    let keys = r0 + rows - k0;
    let qh = Mat::strided(
        q,
        (start + r0) * l.q_width() + h * l.hd,
        rows,
        l.hd,
        l.q_width(),
    );
    let kg = Mat::strided(
        k,
        (start + k0) * l.kv_width() + g * l.hd,
        keys,
        l.hd,
        l.kv_width(),
    );
    matmul(
        MatMut::new(s, rows, keys),
        qh,
        kg.t(),
        l.scale(),
        false,
        Threads::One,
    );
}

/// Query blocks `(r0, rows)` of an example of `len` tokens.
fn blocks(len: usize, block: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..len)
        .step_by(block)
        .map(move |r0| (r0, block.min(len - r0)))
}

/// One example's attention for head `h`: output `[len, hd]` and log-sum-exp `[len]`.
fn unit_forward<T: Real>(
    q: &[T],
    k: &[T],
    v: &[T],
    start: usize,
    len: usize,
    h: usize,
    l: Heads<'_>,
) -> (Vec<T>, Vec<T>) {
    let mut o = vec![T::ZERO; len * l.hd];
    let mut row_lse = vec![T::ZERO; len];
    let mut s = vec![T::ZERO; l.query_block.min(len) * len];
    let g = h / l.groups();
    for (r0, rows) in blocks(len, l.query_block) {
        let k0 = l.first_key(r0);
        let keys = r0 + rows - k0;
        let s = &mut s[..rows * keys];
        scores(s, q, k, h, start, r0, rows, l);
        for (i, row) in s.chunks_mut(keys).enumerate() {
            let seen = l.visible(r0 + i);
            row_lse[r0 + i] =
                softmax_visible(row, seen.start - k0, seen.end - k0, l.softcap, l.sink(h));
        }
        let vg = Mat::strided(
            v,
            (start + k0) * l.kv_width() + g * l.hd,
            keys,
            l.hd,
            l.kv_width(),
        );
        let dst = MatMut::strided(&mut o, r0 * l.hd, rows, l.hd, l.hd);
        matmul(
            dst,
            Mat::new(s, rows, keys),
            vg,
            T::ONE,
            false,
            Threads::One,
        );
    }
    (o, row_lse)
}

/// Output `[n, heads * hd]` and log-sum-exp `[n, heads]` of causal attention within each segment.
pub fn forward<T: Real>(
    q: &[T],
    k: &[T],
    v: &[T],
    segments: &[(usize, usize)],
    l: Heads<'_>,
    out: &mut [T],
    lse: &mut [T],
) {
    let units: Vec<(usize, usize, usize)> = segments
        .iter()
        .flat_map(|&(start, len)| (0..l.heads).map(move |h| (start, len, h)))
        .collect();
    let results: Vec<(Vec<T>, Vec<T>)> = units
        .par_iter()
        .map(|&(start, len, h)| unit_forward(q, k, v, start, len, h, l))
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
    l: Heads<'_>,
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
    l: Heads<'_>,
) -> (Vec<T>, Vec<T>, Vec<T>) {
    let groups = l.groups();
    let (qw, kw) = (l.q_width(), l.kv_width());
    let mut dq = vec![T::ZERO; groups * len * l.hd];
    let mut dk = vec![T::ZERO; len * l.hd];
    let mut dv = vec![T::ZERO; len * l.hd];
    let scratch = l.query_block.min(len) * len;
    let (mut p, mut dp) = (vec![T::ZERO; scratch], vec![T::ZERO; scratch]);
    // tanh(s / cap) of the visible scores, for the soft-cap's derivative.
    let mut capped = vec![T::ZERO; if l.softcap.is_some() { scratch } else { 0 }];
    for j in 0..groups {
        let h = g * groups + j;
        for (r0, rows) in blocks(len, l.query_block) {
            let k0 = l.first_key(r0);
            let keys = r0 + rows - k0;
            let (p, dp) = (&mut p[..rows * keys], &mut dp[..rows * keys]);
            scores(p, saved.q, saved.k, h, start, r0, rows, l);
            for (i, row) in p.chunks_mut(keys).enumerate() {
                let lse = saved.lse[(start + r0 + i) * l.heads + h];
                let seen = l.visible(r0 + i);
                let (lo, hi) = (seen.start - k0, seen.end - k0);
                if let Some(cap) = l.softcap {
                    let cap = T::from_f64(cap);
                    let t = &mut capped[i * keys + lo..i * keys + hi];
                    for (s, t) in row[lo..hi].iter_mut().zip(t) {
                        *t = (*s / cap).tanh();
                        *s = cap * *t;
                    }
                }
                for s in &mut row[lo..hi] {
                    *s = (*s - lse).exp();
                }
                row[..lo].fill(T::ZERO);
                row[hi..].fill(T::ZERO);
            }
            let at = (start + r0) * qw + h * l.hd;
            let d_oh = Mat::strided(d_out, at, rows, l.hd, qw);
            let qh = Mat::strided(saved.q, at, rows, l.hd, qw);
            let kv_at = (start + k0) * kw + g * l.hd;
            let kg = Mat::strided(saved.k, kv_at, keys, l.hd, kw);
            let vg = Mat::strided(saved.v, kv_at, keys, l.hd, kw);
            let p_m = Mat::new(&*p, rows, keys);
            // dV += P^T dO
            let dst = MatMut::new(&mut dv[k0 * l.hd..(k0 + keys) * l.hd], keys, l.hd);
            matmul(dst, p_m.t(), d_oh, T::ONE, true, Threads::One);
            // dP = dO V^T, then dS = P * (dP - rowsum(dO * O)), through the soft-cap's tanh.
            matmul(
                MatMut::new(dp, rows, keys),
                d_oh,
                vg.t(),
                T::ONE,
                false,
                Threads::One,
            );
            for i in 0..rows {
                let at = (start + r0 + i) * qw + h * l.hd;
                let o = &saved.out[at..at + l.hd];
                let g_o = &d_out[at..at + l.hd];
                let dot = o.iter().zip(g_o).fold(T::ZERO, |acc, (a, b)| acc + *a * *b);
                let seen = l.visible(r0 + i);
                let (lo, hi) = (seen.start - k0, seen.end - k0);
                let p_row = &p[i * keys + lo..i * keys + hi];
                let dp_row = &mut dp[i * keys..(i + 1) * keys];
                for (d, p) in dp_row[lo..hi].iter_mut().zip(p_row) {
                    *d = *p * (*d - dot);
                }
                if l.softcap.is_some() {
                    let t = &capped[i * keys + lo..i * keys + hi];
                    for (d, t) in dp_row[lo..hi].iter_mut().zip(t) {
                        *d *= T::ONE - *t * *t;
                    }
                }
                dp_row[..lo].fill(T::ZERO);
                dp_row[hi..].fill(T::ZERO);
            }
            let ds = Mat::new(&*dp, rows, keys);
            let dst = MatMut::strided(&mut dq, (j * len + r0) * l.hd, rows, l.hd, l.hd);
            matmul(dst, ds, kg, l.scale(), false, Threads::One);
            let dst = MatMut::new(&mut dk[k0 * l.hd..(k0 + keys) * l.hd], keys, l.hd);
            matmul(dst, ds.t(), qh, l.scale(), true, Threads::One);
        }
    }
    (dq, dk, dv)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn random(n: usize, rng: &mut rand_chacha::ChaCha8Rng) -> Vec<f64> {
        (0..n).map(|_| rng.random_range(-1.0..1.0)).collect()
    }

    /// Query blocks smaller than the examples give the same output and gradients as one block per
    /// example (the path the model's finite-difference checks cover), with and without a window and a
    /// soft-cap.
    #[test]
    fn query_blocks_do_not_change_the_result() {
        for (window, softcap) in [
            (None, None),
            (Some(3), None),
            (Some(5), Some(0.7)),
            (None, Some(1.5)),
        ] {
            same_result_for_any_block(window, softcap);
        }
    }

    fn same_result_for_any_block(window: Option<usize>, softcap: Option<f64>) {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let segments = [(0, 7), (7, 12), (19, 1)];
        let n = 20;
        let layout = |query_block| Heads {
            sinks: None,
            heads: 4,
            kv: 2,
            hd: 4,
            query_block,
            scale: 0.5,
            softcap,
            window,
        };
        let l = layout(usize::MAX);
        let (q, k, v) = (
            random(n * 16, &mut rng),
            random(n * 8, &mut rng),
            random(n * 8, &mut rng),
        );
        let d_out = random(n * 16, &mut rng);
        let run = |l: Heads<'_>| {
            let (mut out, mut lse) = (vec![0.0; n * 16], vec![0.0; n * 4]);
            forward(&q, &k, &v, &segments, l, &mut out, &mut lse);
            let (mut dq, mut dk, mut dv) = (vec![0.0; n * 16], vec![0.0; n * 8], vec![0.0; n * 8]);
            let saved = Saved {
                q: &q,
                k: &k,
                v: &v,
                out: &out,
                lse: &lse,
            };
            backward(&saved, &d_out, &segments, l, &mut dq, &mut dk, &mut dv);
            [out, lse, dq, dk, dv]
        };
        let whole = run(l);
        for block in [1, 3, 5] {
            for (a, b) in whole.iter().zip(run(layout(block))) {
                for (x, y) in a.iter().zip(&b) {
                    assert!((x - y).abs() < 1e-12, "block {block}: {x} vs {y}");
                }
            }
        }
    }
}
