//! The final norm, the output projection (with Gemma 2's logit soft-cap) and the cross-entropy, for the rows
//! that predict a supervised token only, `LOGIT_CHUNK_ROWS` rows at a time: logits are computed into one
//! reused buffer, turned into their gradient in place (`softmax - onehot`, scaled, through the soft-cap's
//! tanh) and projected back at once, so a vocabulary-sized tensor never exists for more than one chunk.
//! A head kept quantized is decoded a tile of vocabulary rows at a time, for the logits and again for the
//! gradient, into one reused tile: the decoded head never exists whole.

use rayon::prelude::*;

use super::matmul::{FEW_ROWS, Mat, MatMut, Threads, few_rows_quantized_wt, matmul, rows_times_wt};
use super::proj::Weight;
use crate::batch::LOGIT_CHUNK_ROWS;
use crate::kernels::Real;
use crate::norm::{apply_rows, backward_rows, inv_rms_rows};

/// Values of a quantized head decoded at a time (a tile of whole vocabulary rows, 8 MB in f32).
const TILE_VALUES: usize = 1 << 21;

pub struct Head<'a, T> {
    pub norm: &'a [T],
    /// `[vocab, hidden]`.
    pub w: Weight<'a, T>,
    pub vocab: usize,
    pub eps: f64,
    /// Logits become `cap * tanh(logits / cap)`.
    pub softcap: Option<f64>,
}

/// Negative log-likelihood of one row's target; with `scale`, the row becomes `scale * (softmax - onehot)`.
fn row_nll<T: Real>(row: &mut [T], target: usize, scale: Option<f64>, softcap: Option<f64>) -> f64 {
    if let Some(cap) = softcap {
        return capped_row_nll(row, target, scale, T::from_f64(cap));
    }
    let max = row.iter().copied().fold(T::NEG_INFINITY, T::maximum);
    let picked: f64 = (row[target] - max).into();
    let mut sum = 0.0f64;
    for x in row.iter_mut() {
        *x = (*x - max).exp();
        sum += (*x).into();
    }
    if let Some(scale) = scale {
        let factor = T::from_f64(scale / sum);
        for x in row.iter_mut() {
            *x *= factor;
        }
        row[target] -= T::from_f64(scale);
    }
    sum.ln() - picked
}

/// [`row_nll`] of the soft-capped logits `c = cap * tanh(l / cap)`: the gradient with respect to the raw
/// logits is `scale * (softmax(c) - onehot) * (1 - (c / cap)^2)`, so each capped logit is kept until its
/// gradient is written (two passes, where the uncapped row needs one).
fn capped_row_nll<T: Real>(row: &mut [T], target: usize, scale: Option<f64>, cap: T) -> f64 {
    for x in row.iter_mut() {
        *x = cap * (*x / cap).tanh();
    }
    let max = row.iter().copied().fold(T::NEG_INFINITY, T::maximum);
    let picked: f64 = (row[target] - max).into();
    let sum: f64 = row.iter().map(|x| (*x - max).exp().into()).sum();
    if let Some(scale) = scale {
        let factor = T::from_f64(scale / sum);
        for (i, x) in row.iter_mut().enumerate() {
            let t = *x / cap;
            let mut g = (*x - max).exp() * factor;
            if i == target {
                g -= T::from_f64(scale);
            }
            *x = g * (T::ONE - t * t);
        }
    }
    sum.ln() - picked
}

/// `logits [m, vocab] = h [m, hidden] W^T`; a quantized `W` decoded into `tile` a block of rows at a time.
fn project<T: Real>(head: &Head<'_, T>, h: &[T], m: usize, logits: &mut [T], tile: &mut Vec<T>) {
    let (vocab, d) = (head.vocab, head.norm.len());
    match head.w {
        Weight::Dense(w) => rows_times_wt(logits, h, m, w, vocab, d, T::ONE, false),
        Weight::Quantized(q) if m <= FEW_ROWS => few_rows_quantized_wt(logits, h, m, q, false),
        Weight::Quantized(q) => {
            for (first, rows) in tiles(vocab, d) {
                let w = decode_tile(q, first, rows, d, tile);
                let dst = MatMut::strided(logits, first, m, rows, vocab);
                matmul(dst, Mat::new(h, m, d), w.t(), T::ONE, false, Threads::All);
            }
        }
    }
}

/// `dh [m, hidden] = g [m, vocab] W`; a quantized `W` decoded into `tile` a block of rows at a time.
fn project_back<T: Real>(head: &Head<'_, T>, g: &[T], m: usize, dh: &mut [T], tile: &mut Vec<T>) {
    let (vocab, d) = (head.vocab, head.norm.len());
    match head.w {
        Weight::Dense(w) => {
            let dst = MatMut::new(dh, m, d);
            let w = Mat::new(w, vocab, d);
            matmul(dst, Mat::new(g, m, vocab), w, T::ONE, false, Threads::All);
        }
        Weight::Quantized(q) => {
            for (first, rows) in tiles(vocab, d) {
                let w = decode_tile(q, first, rows, d, tile);
                let g = Mat::strided(g, first, m, rows, vocab);
                let dst = MatMut::new(dh, m, d);
                matmul(dst, g, w, T::ONE, first > 0, Threads::All);
            }
        }
    }
}

/// The vocabulary split into tiles of whole rows: `(first row, rows)`.
fn tiles(vocab: usize, d: usize) -> impl Iterator<Item = (usize, usize)> {
    let rows = (TILE_VALUES / d.max(1)).max(1);
    (0..vocab)
        .step_by(rows)
        .map(move |first| (first, rows.min(vocab - first)))
}

/// Rows `first..first + rows` of `q` decoded into `tile`, as a `[rows, d]` matrix.
fn decode_tile<'t, T: Real>(
    q: crate::quant::QuantRows<'_>,
    first: usize,
    rows: usize,
    d: usize,
    tile: &'t mut Vec<T>,
) -> Mat<'t, T> {
    tile.resize(rows * d, T::ZERO);
    q.decode_rows_as(first, &mut tile[..rows * d]);
    Mat::new(&tile[..rows * d], rows, d)
}

/// Logits `[m, vocab]` of the rows `x [m, hidden]`: the final norm, the output projection and the
/// family's soft-cap.
pub fn logits<T: Real>(head: &Head<'_, T>, x: &[T]) -> Vec<T> {
    let d = head.norm.len();
    let m = x.len() / d;
    let mut inv = vec![0.0; m];
    inv_rms_rows(x, d, head.eps, &mut inv);
    let mut normed = vec![T::ZERO; m * d];
    apply_rows(x, head.norm, &inv, &mut normed);
    let mut logits = vec![T::ZERO; m * head.vocab];
    let mut tile = Vec::new();
    project(head, &normed, m, &mut logits, &mut tile);
    if let Some(cap) = head.softcap {
        let cap = T::from_f64(cap);
        logits.iter_mut().for_each(|l| *l = cap * (*l / cap).tanh());
    }
    logits
}

/// The summed NLL of `tokens` predicted from `rows` of the last block's output `x [n, hidden]`; with
/// `scale`, also the gradient of `scale * sum(nll)` with respect to `x`.
pub fn loss<T: Real>(
    head: &Head<'_, T>,
    x: &[T],
    rows: &[u32],
    tokens: &[u32],
    scale: Option<f64>,
) -> (f64, Option<Vec<T>>) {
    let d = head.norm.len();
    let m = rows.len();
    let mut selected = vec![T::ZERO; m * d];
    for (dst, &r) in selected.chunks_mut(d).zip(rows) {
        dst.copy_from_slice(&x[r as usize * d..(r as usize + 1) * d]);
    }
    let mut inv = vec![0.0; m];
    inv_rms_rows(&selected, d, head.eps, &mut inv);
    let mut normed = vec![T::ZERO; m * d];
    apply_rows(&selected, head.norm, &inv, &mut normed);
    let mut d_normed = vec![T::ZERO; if scale.is_some() { m * d } else { 0 }];
    let chunk = LOGIT_CHUNK_ROWS.min(m);
    let mut logits = vec![T::ZERO; chunk * head.vocab];
    let mut tile = Vec::new();
    let mut nll_sum = 0.0;
    let mut start = 0;
    while start < m {
        let c = chunk.min(m - start);
        let lg = &mut logits[..c * head.vocab];
        let h = &normed[start * d..(start + c) * d];
        project(head, h, c, lg, &mut tile);
        nll_sum += lg
            .par_chunks_mut(head.vocab)
            .zip(&tokens[start..start + c])
            .map(|(row, t)| row_nll(row, *t as usize, scale, head.softcap))
            .sum::<f64>();
        if scale.is_some() {
            project_back(
                head,
                lg,
                c,
                &mut d_normed[start * d..(start + c) * d],
                &mut tile,
            );
        }
        start += c;
    }
    if scale.is_none() {
        return (nll_sum, None);
    }
    let mut d_selected = vec![T::ZERO; m * d];
    backward_rows(
        &selected,
        head.norm,
        &inv,
        &d_normed,
        &mut d_selected,
        false,
    );
    let mut dx = vec![T::ZERO; x.len()];
    for (src, &r) in d_selected.chunks(d).zip(rows) {
        dx[r as usize * d..(r as usize + 1) * d].copy_from_slice(src);
    }
    (nll_sum, Some(dx))
}
