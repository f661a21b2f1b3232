//! A sparse block's mixture of experts on the CPU engine, forward and backward: the router's logits, the
//! routing (`crate::routing`), then per expert its tokens gathered into one contiguous block and run through
//! its gate_up and down projections (LoRA included) as matrix products over the block, the weighted results
//! added back to their tokens. The backward runs the same segments in reverse and carries the gradient
//! through the routing weights and the router's softmax to the block's input. Kept per expert segment:
//! gate and up, the expert's output before weighting, and the LoRA `x A^T`.

use dn_arch::{Activation, Experts};

use super::glu;
use super::matmul::rows_times_wt;
use super::proj::{Lora, LoraGrad, Proj, Weight, join_columns, split_columns};
use crate::kernels::Real;
use crate::model::ExpertMlp;
use crate::routing::{Routing, softmax_rows};

/// The pairs of every expert on one fused tensor (PEFT's `target_parameters` layout: `a [rank * experts,
/// in]` expert-major rows, `b [out, rank * experts]` rank-major columns).
pub struct FusedLora<'a, T> {
    pub a: &'a [T],
    pub b: &'a [T],
    pub rank: usize,
    pub scale: T,
}

/// A sparse block's router and experts.
pub struct ExpertWeights<'a, T> {
    pub spec: Experts,
    pub hidden: usize,
    /// `[experts, hidden]`.
    pub router: &'a [T],
    /// The router's pair (`a [rank, hidden]`, `b [experts, rank]`) when targeted.
    pub router_lora: Option<Lora<'a, T>>,
    /// `[experts, 2 * intermediate, hidden]`, dense or kept quantized.
    pub gate_up: Weight<'a, T>,
    /// `[experts, hidden, intermediate]`.
    pub down: Weight<'a, T>,
    pub gate_up_lora: Option<FusedLora<'a, T>>,
    pub down_lora: Option<FusedLora<'a, T>>,
    /// Qwen2-MoE's shared expert (frozen).
    pub shared: Option<SharedWeights<'a, T>>,
    /// gpt-oss's frozen biases: the router's `[experts]`, gate_up's `[experts, 2 * intermediate]`, down's
    /// `[experts, hidden]`.
    pub biases: Option<[&'a [T]; 3]>,
    /// Where the routing is counted.
    pub mlp: &'a ExpertMlp,
}

/// A shared expert: `sigmoid(x scale^T) * down(act(gate(x)) * up(x))`, all frozen.
pub struct SharedWeights<'a, T> {
    /// `[width, hidden]`.
    pub gate: &'a [T],
    pub up: &'a [T],
    /// `[hidden, width]`.
    pub down: &'a [T],
    /// `[hidden]`.
    pub scale: &'a [T],
    pub width: usize,
}

impl<'a, T: Real> SharedWeights<'a, T> {
    fn proj(w: &'a [T], out: usize, inp: usize) -> Proj<'a, T> {
        Proj {
            w: Weight::Dense(w),
            bias: None,
            out,
            inp,
            lora: None,
        }
    }
}

/// What the shared expert's backward reads.
struct SharedSaved<T> {
    gate: Vec<T>,
    up: Vec<T>,
    /// Its output before the gate's scale.
    y: Vec<T>,
    sigmoid: Vec<T>,
}

/// Adds the shared expert's output for `h [n, d]` to `out`.
fn shared_forward<T: Real>(
    sh: &SharedWeights<'_, T>,
    activation: Activation,
    h: &[T],
    n: usize,
    d: usize,
    out: &mut [T],
) -> SharedSaved<T> {
    let fs = sh.width;
    let mut u = Vec::new();
    let (mut gate, mut up) = (vec![T::ZERO; n * fs], vec![T::ZERO; n * fs]);
    SharedWeights::proj(sh.gate, fs, d).forward(h, n, &mut gate, false, &mut u);
    SharedWeights::proj(sh.up, fs, d).forward(h, n, &mut up, false, &mut u);
    let mut a = vec![T::ZERO; n * fs];
    glu::forward(activation, &gate, &up, &mut a);
    let mut y = vec![T::ZERO; n * d];
    SharedWeights::proj(sh.down, d, fs).forward(&a, n, &mut y, false, &mut u);
    let mut logit = vec![T::ZERO; n];
    rows_times_wt(&mut logit, h, n, sh.scale, 1, d, T::ONE, false);
    let sigmoid: Vec<T> = logit
        .iter()
        .map(|l| T::ONE / (T::ONE + (T::ZERO - *l).exp()))
        .collect();
    for ((o, y), s) in out.chunks_mut(d).zip(y.chunks(d)).zip(&sigmoid) {
        for (o, y) in o.iter_mut().zip(y) {
            *o += *s * *y;
        }
    }
    SharedSaved {
        gate,
        up,
        y,
        sigmoid,
    }
}

/// Adds the shared expert's input gradient to `dh` given the gradient `dout` of the mixture's output.
#[allow(clippy::too_many_arguments)]
fn shared_backward<T: Real>(
    sh: &SharedWeights<'_, T>,
    activation: Activation,
    mut s: SharedSaved<T>,
    h: &[T],
    n: usize,
    d: usize,
    dout: &[T],
    dh: &mut [T],
) {
    let fs = sh.width;
    let mut t = Vec::new();
    let mut dy = vec![T::ZERO; n * d];
    let mut d_logit = vec![T::ZERO; n];
    for tok in 0..n {
        let (row, g) = (
            &dout[tok * d..(tok + 1) * d],
            &mut dy[tok * d..(tok + 1) * d],
        );
        let sig = s.sigmoid[tok];
        let mut dot = T::ZERO;
        for ((g, o), y) in g.iter_mut().zip(row).zip(&s.y[tok * d..(tok + 1) * d]) {
            *g = sig * *o;
            dot += *o * *y;
        }
        d_logit[tok] = dot * sig * (T::ONE - sig);
    }
    let mut a = vec![T::ZERO; n * fs];
    glu::forward(activation, &s.gate, &s.up, &mut a);
    let mut da = vec![T::ZERO; n * fs];
    SharedWeights::proj(sh.down, d, fs).backward(&a, &dy, &[], n, &mut da, false, None, &mut t);
    glu::backward(activation, &mut s.gate, &mut s.up, &da);
    SharedWeights::proj(sh.gate, fs, d).backward(h, &s.gate, &[], n, dh, true, None, &mut t);
    SharedWeights::proj(sh.up, fs, d).backward(h, &s.up, &[], n, dh, true, None, &mut t);
    for (row, g) in dh.chunks_mut(d).zip(&d_logit) {
        for (v, w) in row.iter_mut().zip(sh.scale) {
            *v += *g * *w;
        }
    }
}

/// Expert `e`'s columns of a fused `b [out, rank * experts]`, as a contiguous `[out, rank]`.
fn expert_b<T: Real>(l: &FusedLora<'_, T>, out: usize, experts: usize, e: usize) -> Vec<T> {
    let mut b = Vec::with_capacity(out * l.rank);
    for row in l.b.chunks(l.rank * experts).take(out) {
        b.extend((0..l.rank).map(|k| row[k * experts + e]));
    }
    b
}

/// Expert `e`'s slice of a fused `[experts, out, inp]` tensor as a projection, with its pair (`b_e` from
/// [`expert_b`]).
fn expert_proj<'a, T: Real>(
    fused: Weight<'a, T>,
    lora: Option<&FusedLora<'a, T>>,
    b_e: &'a [T],
    (out, inp): (usize, usize),
    e: usize,
) -> Proj<'a, T> {
    let w = match fused {
        Weight::Dense(w) => Weight::Dense(&w[e * out * inp..(e + 1) * out * inp]),
        Weight::Quantized(q) => Weight::Quantized(crate::quant::QuantRows {
            first: q.first + e * out,
            rows: out,
            ..q
        }),
    };
    Proj {
        w,
        bias: None,
        out,
        inp,
        lora: lora.map(|l| Lora {
            a: &l.a[e * l.rank * inp..(e + 1) * l.rank * inp],
            b: b_e,
            rank: l.rank,
            scale: l.scale,
        }),
    }
}

impl<'a, T: Real> ExpertWeights<'a, T> {
    /// The router as a projection: its weight, gpt-oss's bias, its pair.
    fn router(&self) -> Proj<'a, T> {
        Proj {
            w: Weight::Dense(self.router),
            bias: self.biases.map(|[bias, _, _]| bias),
            out: self.spec.count,
            inp: self.hidden,
            lora: self.router_lora.as_ref().map(|l| Lora { ..*l }),
        }
    }

    fn shapes(&self) -> [(usize, usize); 2] {
        let (d, f) = (self.hidden, self.spec.intermediate_size);
        [(2 * f, d), (d, f)]
    }

    /// Each expert's `b` columns of both pairs (empty where a tensor has none).
    fn expert_bs(&self) -> Vec<[Vec<T>; 2]> {
        let [gu, dn] = self.shapes();
        let count = self.spec.count;
        (0..count)
            .map(|e| {
                [
                    self.gate_up_lora
                        .as_ref()
                        .map_or_else(Vec::new, |l| expert_b(l, gu.0, count, e)),
                    self.down_lora
                        .as_ref()
                        .map_or_else(Vec::new, |l| expert_b(l, dn.0, count, e)),
                ]
            })
            .collect()
    }

    /// Zeroed gradients of the router's pair and of the two fused pairs (gate_up's, down's), in their
    /// fused layouts.
    pub fn grads(&self) -> [Option<LoraGrad<T>>; 3] {
        let count = self.spec.count;
        let grad = |l: &Option<FusedLora<'_, T>>, (out, inp): (usize, usize)| {
            l.as_ref().map(|l| LoraGrad {
                a: vec![T::ZERO; l.rank * count * inp],
                b: vec![T::ZERO; out * l.rank * count],
            })
        };
        let [gu, dn] = self.shapes();
        [
            self.router().grad(),
            grad(&self.gate_up_lora, gu),
            grad(&self.down_lora, dn),
        ]
    }
}

/// What the backward reads, per slot in expert order (`routing.order`).
pub struct Saved<T> {
    routing: Routing,
    /// Router probabilities `[n, experts]`.
    probs: Vec<f64>,
    gate: Vec<T>,
    up: Vec<T>,
    /// Each slot's expert output before its weight.
    y: Vec<T>,
    /// `x A^T` of the router's, gate_up's and down's pairs.
    u_router: Vec<T>,
    u_gate_up: Vec<T>,
    u_down: Vec<T>,
    shared: Option<SharedSaved<T>>,
}

/// `rows` (each `[width]`) plus `bias`.
fn add_bias<T: Real>(rows: &mut [T], bias: &[T]) {
    for row in rows.chunks_mut(bias.len()) {
        for (v, b) in row.iter_mut().zip(bias) {
            *v += *b;
        }
    }
}

/// gate and up of each row of `gate_up [m, 2f]`: its halves, or its even and odd columns (interleaved).
fn split_gate_up<T: Real>(
    gate_up: &[T],
    m: usize,
    interleaved: bool,
    gate: &mut [T],
    up: &mut [T],
) {
    if !interleaved {
        return split_columns(gate_up, m, &mut [gate, up]);
    }
    let f = gate.len() / m.max(1);
    for ((row, g), u) in gate_up
        .chunks(2 * f)
        .zip(gate.chunks_mut(f))
        .zip(up.chunks_mut(f))
    {
        for j in 0..f {
            g[j] = row[2 * j];
            u[j] = row[2 * j + 1];
        }
    }
}

/// The inverse of [`split_gate_up`].
fn join_gate_up<T: Real>(gate: &[T], up: &[T], m: usize, interleaved: bool, gate_up: &mut [T]) {
    if !interleaved {
        return join_columns(&[gate, up], m, gate_up);
    }
    let f = gate.len() / m.max(1);
    for ((row, g), u) in gate_up
        .chunks_mut(2 * f)
        .zip(gate.chunks(f))
        .zip(up.chunks(f))
    {
        for j in 0..f {
            row[2 * j] = g[j];
            row[2 * j + 1] = u[j];
        }
    }
}

/// The experts' activation `a` of gate and up: the model's gated one, or gpt-oss's clamped SwiGLU.
fn activate<T: Real>(spec: &Experts, activation: Activation, gate: &[T], up: &[T], a: &mut [T]) {
    match spec.clamped_swiglu {
        Some(c) => glu::clamped_forward(c.alpha, c.limit, gate, up, a),
        None => glu::forward(activation, gate, up, a),
    }
}

/// [`activate`]'s backward: gate and up replaced by their gradients.
fn activate_backward<T: Real>(
    spec: &Experts,
    activation: Activation,
    gate: &mut [T],
    up: &mut [T],
    da: &[T],
) {
    match spec.clamped_swiglu {
        Some(c) => glu::clamped_backward(c.alpha, c.limit, gate, up, da),
        None => glu::backward(activation, gate, up, da),
    }
}

/// Rows `tokens` of `h [.., d]` into a contiguous block.
fn gather<T: Real>(h: &[T], d: usize, tokens: impl Iterator<Item = usize>) -> Vec<T> {
    let mut x = Vec::new();
    for t in tokens {
        x.extend_from_slice(&h[t * d..(t + 1) * d]);
    }
    x
}

/// Adds the mixture's output for the normed input `h [n, d]` to `out [n, d]`.
pub fn forward<T: Real>(
    w: &ExpertWeights<'_, T>,
    activation: Activation,
    h: &[T],
    n: usize,
    out: &mut [T],
) -> Saved<T> {
    let (d, f, count) = (w.hidden, w.spec.intermediate_size, w.spec.count);
    let mut logits = vec![T::ZERO; n * count];
    let mut u_router = Vec::new();
    w.router().forward(h, n, &mut logits, false, &mut u_router);
    let logits: Vec<f64> = logits.iter().map(|v| v.to_f64()).collect();
    let probs = softmax_rows(&logits, count);
    let routing = Routing::new(&probs, &w.spec);
    w.mlp.record_load(&routing.load());
    let k = routing.top_k;
    let slots = n * k;
    let rank = |l: &Option<FusedLora<'_, T>>| l.as_ref().map_or(0, |l| l.rank);
    let (r_gu, r_dn) = (rank(&w.gate_up_lora), rank(&w.down_lora));
    let mut s = Saved {
        gate: vec![T::ZERO; slots * f],
        up: vec![T::ZERO; slots * f],
        y: vec![T::ZERO; slots * d],
        u_router,
        u_gate_up: vec![T::ZERO; slots * r_gu],
        u_down: vec![T::ZERO; slots * r_dn],
        probs,
        routing,
        shared: None,
    };
    let bs = w.expert_bs();
    let [gu_shape, dn_shape] = w.shapes();
    let (mut u, mut gate_up, mut a) = (Vec::new(), Vec::new(), Vec::new());
    for (e, [b_gu, b_dn]) in bs.iter().enumerate() {
        let (start, end) = (s.routing.offsets[e], s.routing.offsets[e + 1]);
        let m = end - start;
        if m == 0 {
            continue;
        }
        let x = gather(h, d, s.routing.slots(e).iter().map(|slot| slot / k));
        let p = expert_proj(w.gate_up, w.gate_up_lora.as_ref(), b_gu, gu_shape, e);
        gate_up.resize(m * 2 * f, T::ZERO);
        p.forward(&x, m, &mut gate_up, false, &mut u);
        s.u_gate_up[start * r_gu..end * r_gu].copy_from_slice(&u[..m * r_gu]);
        if let Some([_, bias, _]) = w.biases {
            add_bias(&mut gate_up, &bias[e * 2 * f..(e + 1) * 2 * f]);
        }
        let (gate, up) = (
            &mut s.gate[start * f..end * f],
            &mut s.up[start * f..end * f],
        );
        split_gate_up(&gate_up, m, w.spec.interleaved, gate, up);
        a.resize(m * f, T::ZERO);
        activate(&w.spec, activation, gate, up, &mut a);
        let p = expert_proj(w.down, w.down_lora.as_ref(), b_dn, dn_shape, e);
        let y = &mut s.y[start * d..end * d];
        p.forward(&a, m, y, false, &mut u);
        if let Some([_, _, bias]) = w.biases {
            add_bias(y, &bias[e * d..(e + 1) * d]);
        }
        s.u_down[start * r_dn..end * r_dn].copy_from_slice(&u[..m * r_dn]);
        for (row, slot) in y.chunks(d).zip(s.routing.slots(e)) {
            let weight = T::from_f64(s.routing.weights[*slot]);
            let t = slot / k;
            for (o, v) in out[t * d..(t + 1) * d].iter_mut().zip(row) {
                *o += weight * *v;
            }
        }
    }
    s.shared = w
        .shared
        .as_ref()
        .map(|sh| shared_forward(sh, activation, h, n, d, out));
    s
}

/// Expert `e`'s gradient of a fused pair, added into the fused gradient: `a`'s rows, `b`'s columns.
fn add_expert_grad<T: Real>(
    fused: &mut LoraGrad<T>,
    g: &LoraGrad<T>,
    (rank, count, e): (usize, usize, usize),
) {
    let inp = g.a.len() / rank;
    for (dst, src) in fused.a[e * rank * inp..(e + 1) * rank * inp]
        .iter_mut()
        .zip(&g.a)
    {
        *dst += *src;
    }
    for (row, src) in fused.b.chunks_mut(rank * count).zip(g.b.chunks(rank)) {
        for k in 0..rank {
            row[k * count + e] += src[k];
        }
    }
}

/// Adds the gradient of the mixture's input `h` to `dh` given `dout`, the gradient of its output, and the
/// LoRA gradients to `grads` (the router's; gate_up's and down's, fused).
#[allow(clippy::too_many_arguments)]
pub fn backward<T: Real>(
    w: &ExpertWeights<'_, T>,
    activation: Activation,
    mut s: Saved<T>,
    h: &[T],
    n: usize,
    dout: &[T],
    dh: &mut [T],
    grads: &mut [Option<LoraGrad<T>>; 3],
) {
    let (d, f, count) = (w.hidden, w.spec.intermediate_size, w.spec.count);
    let k = s.routing.top_k;
    let rank = |l: &Option<FusedLora<'_, T>>| l.as_ref().map_or(0, |l| l.rank);
    let (r_gu, r_dn) = (rank(&w.gate_up_lora), rank(&w.down_lora));
    if let (Some(sh), Some(saved)) = (&w.shared, s.shared.take()) {
        shared_backward(sh, activation, saved, h, n, d, dout, dh);
    }
    // The gradient of each slot's weight: its output row against the token's output gradient.
    let mut d_weight = vec![0.0f64; n * k];
    for e in 0..count {
        let (start, end) = (s.routing.offsets[e], s.routing.offsets[e + 1]);
        for (row, slot) in s.y[start * d..end * d].chunks(d).zip(s.routing.slots(e)) {
            let t = slot / k;
            let dot: f64 = row
                .iter()
                .zip(&dout[t * d..(t + 1) * d])
                .map(|(a, b)| a.to_f64() * b.to_f64())
                .sum();
            d_weight[*slot] = dot;
        }
    }
    let bs = w.expert_bs();
    let [gu_shape, dn_shape] = w.shapes();
    let (mut dy, mut a, mut da, mut dgu, mut dx, mut t) = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    for (e, [b_gu, b_dn]) in bs.iter().enumerate() {
        let (start, end) = (s.routing.offsets[e], s.routing.offsets[e + 1]);
        let m = end - start;
        if m == 0 {
            continue;
        }
        let slots = s.routing.slots(e);
        dy.clear();
        for slot in slots {
            let (weight, tok) = (T::from_f64(s.routing.weights[*slot]), slot / k);
            dy.extend(dout[tok * d..(tok + 1) * d].iter().map(|v| weight * *v));
        }
        let (gate, up) = (
            &mut s.gate[start * f..end * f],
            &mut s.up[start * f..end * f],
        );
        a.resize(m * f, T::ZERO);
        activate(&w.spec, activation, gate, up, &mut a);
        da.resize(m * f, T::ZERO);
        let p = expert_proj(w.down, w.down_lora.as_ref(), b_dn, dn_shape, e);
        let mut g = p.grad();
        let u = &s.u_down[start * r_dn..end * r_dn];
        p.backward(&a, &dy, u, m, &mut da, false, g.as_mut(), &mut t);
        if let (Some(g), Some(fused)) = (g, grads[2].as_mut()) {
            add_expert_grad(fused, &g, (r_dn, count, e));
        }
        activate_backward(&w.spec, activation, gate, up, &da);
        dgu.resize(m * 2 * f, T::ZERO);
        join_gate_up(gate, up, m, w.spec.interleaved, &mut dgu);
        let x = gather(h, d, slots.iter().map(|slot| slot / k));
        dx.resize(m * d, T::ZERO);
        let p = expert_proj(w.gate_up, w.gate_up_lora.as_ref(), b_gu, gu_shape, e);
        let mut g = p.grad();
        let u = &s.u_gate_up[start * r_gu..end * r_gu];
        p.backward(&x, &dgu, u, m, &mut dx, false, g.as_mut(), &mut t);
        if let (Some(g), Some(fused)) = (g, grads[1].as_mut()) {
            add_expert_grad(fused, &g, (r_gu, count, e));
        }
        for (row, slot) in dx.chunks(d).zip(slots) {
            let tok = slot / k;
            for (o, v) in dh[tok * d..(tok + 1) * d].iter_mut().zip(row) {
                *o += *v;
            }
        }
    }
    // Through the top-k weights (and their renormalisation) and the router's softmax to its logits.
    let mut d_logits = vec![T::ZERO; n * count];
    for tok in 0..n {
        let p = &s.probs[tok * count..(tok + 1) * count];
        let chosen = &s.routing.experts[tok * k..(tok + 1) * k];
        let dw = &d_weight[tok * k..(tok + 1) * k];
        let mut dp = vec![0.0f64; count];
        if w.spec.normalize_top_k {
            let sum: f64 = chosen.iter().map(|e| p[*e]).sum();
            let weights = &s.routing.weights[tok * k..(tok + 1) * k];
            let mean: f64 = dw.iter().zip(weights).map(|(g, w)| g * w).sum();
            for (j, e) in chosen.iter().enumerate() {
                dp[*e] = (dw[j] - mean) / sum;
            }
        } else {
            for (j, e) in chosen.iter().enumerate() {
                dp[*e] = dw[j];
            }
        }
        let dot: f64 = dp.iter().zip(p).map(|(g, p)| g * p).sum();
        for (e, out) in d_logits[tok * count..(tok + 1) * count]
            .iter_mut()
            .enumerate()
        {
            *out = T::from_f64(p[e] * (dp[e] - dot));
        }
    }
    let mut t = Vec::new();
    w.router().backward(
        h,
        &d_logits,
        &s.u_router,
        n,
        dh,
        true,
        grads[0].as_mut(),
        &mut t,
    );
}
