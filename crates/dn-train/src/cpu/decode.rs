//! Generation on the CPU engine: the forward of new tokens (a whole prompt, or the last sampled token of
//! each sequence) against each sequence's cache of keys and values, so that a new token costs one row per
//! block. The projections of every sequence's new rows run as one matrix product; attention runs per
//! (sequence, head) against that sequence's cache, a block of query rows at a time.

use rayon::prelude::*;

use super::attention::{Heads, softmax_visible};
use super::block::{self, Qkv, RopeTable, Scratch};
use super::head;
use super::matmul::{FEW_ROWS, Mat, MatMut, Threads, matmul};
use super::simd::dot;
use super::{context, embed_rows, rope_tables, with_views};
use crate::error::Result;
use crate::kernels::Real;
use crate::model::LoraModel;

/// The keys and values (after their norms and rope) of a sequence's tokens in each layer, `[len, kv * hd]`.
pub struct KvCache<T> {
    layers: Vec<(Vec<T>, Vec<T>)>,
    len: usize,
}

impl<T> KvCache<T> {
    pub fn new(layers: usize) -> Self {
        KvCache {
            layers: (0..layers).map(|_| (Vec::new(), Vec::new())).collect(),
            len: 0,
        }
    }

    /// Tokens cached.
    pub fn len(&self) -> usize {
        self.len
    }
}

/// Runs `new[i]` through the model after the tokens `caches[i]` holds, appends their keys and values,
/// and returns the logits of each sequence's last new token.
pub fn extend<T: Real>(
    model: &LoraModel,
    caches: &mut [&mut KvCache<T>],
    new: &[&[u32]],
) -> Result<Vec<Vec<f32>>> {
    with_views(model, |w| {
        let c = &model.config;
        let d = c.hidden_size;
        let (qw, kvw) = (c.q_width(), c.kv_width());
        let ids: Vec<u32> = new.iter().flat_map(|t| t.iter().copied()).collect();
        let mut segments = Vec::with_capacity(new.len());
        let mut start = 0;
        for tokens in new {
            segments.push((start, tokens.len()));
            start += tokens.len();
        }
        let n = ids.len();
        // Positions continue each sequence's cache; length-dependent frequencies follow its new length.
        let spans: Vec<(usize, usize, usize)> = caches
            .iter()
            .zip(new)
            .map(|(cache, t)| (cache.len, t.len(), cache.len + t.len()))
            .collect();
        let ropes: Vec<RopeTable<T>> = rope_tables(model, &spans);
        let ctx = context(model, n, &segments, &ropes);
        let mut x = embed_rows(w.embed, &ids, d, c.embedding_scale)?;
        let mut scratch = Scratch::default();
        for (layer, b) in w.blocks.iter().enumerate() {
            let Qkv { q, k, v, mut u, .. } = block::qkv(b, &ctx, &x, &ropes[b.rope], &mut scratch);
            for (cache, &(start, len)) in caches.iter_mut().zip(&segments) {
                let (ck, cv) = &mut cache.layers[layer];
                ck.extend_from_slice(&k[start * kvw..(start + len) * kvw]);
                cv.extend_from_slice(&v[start * kvw..(start + len) * kvw]);
            }
            let mut attn = vec![T::ZERO; n * qw];
            let layout = ctx.layout(b.window, b.sinks.as_deref());
            attend(&q, caches, layer, &segments, layout, &mut attn);
            x = block::tail(b, &ctx, &x, &attn, &mut scratch, &mut u).out;
        }
        for (cache, &(_, len)) in caches.iter_mut().zip(&segments) {
            cache.len += len;
        }
        let mut last = Vec::with_capacity(segments.len() * d);
        for &(start, len) in &segments {
            let row = start + len - 1;
            last.extend_from_slice(&x[row * d..(row + 1) * d]);
        }
        let logits = head::logits(&w.head, &last);
        Ok(logits
            .chunks(w.head.vocab)
            .map(|row| row.iter().map(|v| Into::<f64>::into(*v) as f32).collect())
            .collect())
    })
}

/// Attention of each sequence's new query rows against its cache (which already holds their own keys).
fn attend<T: Real>(
    q: &[T],
    caches: &[&mut KvCache<T>],
    layer: usize,
    segments: &[(usize, usize)],
    l: Heads<'_>,
    out: &mut [T],
) {
    let units: Vec<(usize, usize)> = (0..segments.len())
        .flat_map(|s| (0..l.heads).map(move |h| (s, h)))
        .collect();
    let results: Vec<Vec<T>> = units
        .par_iter()
        .map(|&(s, h)| {
            let (k, v) = &caches[s].layers[layer];
            unit(q, k, v, segments[s], h, l)
        })
        .collect();
    for (&(s, h), o) in units.iter().zip(results) {
        let start = segments[s].0;
        for (i, row) in o.chunks(l.hd).enumerate() {
            let at = (start + i) * l.q_width() + h * l.hd;
            out[at..at + l.hd].copy_from_slice(row);
        }
    }
}

/// [`unit`]'s block of `rows` query rows (rows `q0..` of `q`, absolute positions `p0..`) against the
/// cached keys `k0..k0 + keys`, with dot products and scaled sums of cached rows.
#[allow(clippy::too_many_arguments)]
fn few_rows_attention<T: Real>(
    s: &mut [T],
    o: &mut [T],
    q: &[T],
    k: &[T],
    v: &[T],
    (q0, rows): (usize, usize),
    (k0, keys): (usize, usize),
    h: usize,
    p0: usize,
    l: Heads<'_>,
) {
    let g = h / l.groups();
    let scale = T::from_f64(l.scale);
    for i in 0..rows {
        let qi = &q[(q0 + i) * l.q_width() + h * l.hd..][..l.hd];
        let row = &mut s[i * keys..(i + 1) * keys];
        for (j, score) in row.iter_mut().enumerate() {
            let kj = &k[(k0 + j) * l.kv_width() + g * l.hd..][..l.hd];
            *score = dot(qi, kj) * scale;
        }
        let seen = l.visible(p0 + i);
        softmax_visible(row, seen.start - k0, seen.end - k0, l.softcap, l.sink(h));
        let out = &mut o[i * l.hd..(i + 1) * l.hd];
        out.fill(T::ZERO);
        for (j, &p) in row.iter().enumerate() {
            if p == T::ZERO {
                continue;
            }
            let vj = &v[(k0 + j) * l.kv_width() + g * l.hd..][..l.hd];
            for (o, x) in out.iter_mut().zip(vj) {
                *o += p * *x;
            }
        }
    }
}

/// Head `h`'s output `[len, hd]` for the `len` new rows of one sequence (rows `start..` of `q`), whose
/// cache `k`/`v` holds `total` tokens, the new ones last.
fn unit<T: Real>(
    q: &[T],
    k: &[T],
    v: &[T],
    (start, len): (usize, usize),
    h: usize,
    l: Heads<'_>,
) -> Vec<T> {
    let total = k.len() / l.kv_width();
    let old = total - len;
    let g = h / l.groups();
    let mut o = vec![T::ZERO; len * l.hd];
    let mut s = vec![T::ZERO; l.query_block.min(len) * total];
    for r0 in (0..len).step_by(l.query_block) {
        let rows = l.query_block.min(len - r0);
        // Absolute positions old + r0.. see keys from k0 up to their own.
        let k0 = l.first_key(old + r0);
        let keys = old + r0 + rows - k0;
        let s = &mut s[..rows * keys];
        if rows <= FEW_ROWS {
            // A few rows (a decoding step): dot products and sums over the cached rows, no packing.
            few_rows_attention(
                s,
                &mut o[r0 * l.hd..],
                q,
                k,
                v,
                (start + r0, rows),
                (k0, keys),
                h,
                old + r0,
                l,
            );
            continue;
        }
        let qh = Mat::strided(
            q,
            (start + r0) * l.q_width() + h * l.hd,
            rows,
            l.hd,
            l.q_width(),
        );
        let kg = Mat::strided(k, k0 * l.kv_width() + g * l.hd, keys, l.hd, l.kv_width());
        matmul(
            MatMut::new(s, rows, keys),
            qh,
            kg.t(),
            T::from_f64(l.scale),
            false,
            Threads::One,
        );
        for (i, row) in s.chunks_mut(keys).enumerate() {
            let seen = l.visible(old + r0 + i);
            softmax_visible(row, seen.start - k0, seen.end - k0, l.softcap, l.sink(h));
        }
        let vg = Mat::strided(v, k0 * l.kv_width() + g * l.hd, keys, l.hd, l.kv_width());
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
    o
}
