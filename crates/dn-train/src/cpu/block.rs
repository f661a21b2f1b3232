//! One decoder block, forward and hand-written backward, on borrowed weight slices and caller-owned
//! buffers, for every feature a family's description turns on: projection biases, fused projections,
//! q/k norms, partial and per-layer rope, windowed and soft-capped attention, Gemma's norms around
//! attention and MLP, and the MLP's activation. The forward keeps only what the backward cannot cheaply
//! redo: the block's input, q/k/v after rope (and before their norms), the attention output and
//! log-sum-exp, the residual after attention, the gate and up projections, the outputs of o and down
//! under sandwich norms, and the LoRA down-projections `x A^T`; the other norms and the activation are
//! recomputed.

use dn_arch::{Activation, Role};
use rayon::prelude::*;

use super::attention::{self, Heads};
use super::experts::{self, ExpertWeights};
use super::glu;
use super::proj::{LoraGrad, Proj, join_columns, split_columns};
use crate::kernels::Real;
use crate::norm::{apply_rows, apply_rows_add, backward_rows, inv_rms_rows};

/// A block's weights (norm weights with the family's offset already applied).
pub struct BlockWeights<'a, T> {
    pub input_norm: &'a [T],
    pub q_norm: Option<&'a [T]>,
    pub k_norm: Option<&'a [T]>,
    pub post_attention_norm: Option<&'a [T]>,
    pub mlp_norm: &'a [T],
    pub post_mlp_norm: Option<&'a [T]>,
    /// The block's projections in execution order, each addressed by its role ([`BlockWeights::at`]).
    pub projections: Vec<Proj<'a, T>>,
    /// The role of each projection.
    pub roles: Vec<Role>,
    /// A sparse block's mixture of experts (its MLP; no MLP projection then).
    pub experts: Option<ExpertWeights<'a, T>>,
    /// Sliding window of this layer.
    pub window: Option<usize>,
    /// Which of the context's rope tables this layer uses.
    pub rope: usize,
    /// Each head's attention sink logit (gpt-oss).
    pub sinks: Option<Vec<f64>>,
}

impl<'a, T> BlockWeights<'a, T> {
    /// The index of the projection of `role` (and of its scratch and gradient slots).
    fn at(&self, role: Role) -> usize {
        self.roles
            .iter()
            .position(|r| *r == role)
            .expect("the block has every projection its config names")
    }

    /// q, k and v are one projection (Phi-3's `qkv_proj`).
    fn fused_qkv(&self) -> bool {
        self.roles.contains(&Role::Qkv)
    }

    /// gate and up are one projection (Phi-3's `gate_up_proj`).
    fn fused_gate_up(&self) -> bool {
        self.roles.contains(&Role::GateUp)
    }
}

/// The separate attention inputs, in the order their outputs are split and joined.
const QKV: [Role; 3] = [Role::Q, Role::K, Role::V];

/// One rope setting's tables for the batch: `[n, rotary / 2]` cos and sin (with its factor applied).
pub struct RopeTable<T> {
    pub cos: Vec<T>,
    pub sin: Vec<T>,
    /// Leading dimensions of each head that rotate.
    pub rotary: usize,
}

/// Shapes and constants shared by every block of a batch.
pub struct Context<'a, T> {
    pub n: usize,
    pub hidden: usize,
    pub heads: usize,
    pub kv: usize,
    pub hd: usize,
    pub query_block: usize,
    pub attention_scale: f64,
    pub softcap: Option<f64>,
    pub activation: Activation,
    pub eps: f64,
    pub segments: &'a [(usize, usize)],
    pub ropes: &'a [RopeTable<T>],
}

impl<T> Context<'_, T> {
    pub fn layout<'s>(&self, window: Option<usize>, sinks: Option<&'s [f64]>) -> Heads<'s> {
        Heads {
            sinks,
            heads: self.heads,
            kv: self.kv,
            hd: self.hd,
            query_block: self.query_block,
            scale: self.attention_scale,
            softcap: self.softcap,
            window,
        }
    }
}

/// A norm's input and the inverse RMS of its rows.
pub struct Normed<T> {
    x: Vec<T>,
    inv: Vec<f64>,
}

/// What the forward keeps for the backward (see the module doc).
pub struct Saved<T> {
    x: Vec<T>,
    inv1: Vec<f64>,
    q: Vec<T>,
    k: Vec<T>,
    v: Vec<T>,
    /// q and k before their norms (Qwen3, Gemma 3).
    q_pre: Option<Normed<T>>,
    k_pre: Option<Normed<T>>,
    attn: Vec<T>,
    lse: Vec<T>,
    /// o's output before the post-attention norm (Gemma).
    o_out: Option<Normed<T>>,
    x2: Vec<T>,
    inv2: Vec<f64>,
    gate: Vec<T>,
    up: Vec<T>,
    /// down's output before the post-MLP norm (Gemma).
    m: Option<Normed<T>>,
    /// A sparse block's experts.
    moe: Option<experts::Saved<T>>,
    /// `x a^T` of each projection.
    u: Vec<Vec<T>>,
}

/// Rotates the first `rotary` dimensions of each head of `x [n, heads * hd]` by its token's angles
/// (transformers' rotate_half on the rotary part); `inverse` applies the transpose, which is the backward.
fn rope<T: Real>(x: &mut [T], heads: usize, hd: usize, table: &RopeTable<T>, inverse: bool) {
    let half = table.rotary / 2;
    x.par_chunks_mut(heads * hd)
        .zip(table.cos.par_chunks(half).zip(table.sin.par_chunks(half)))
        .for_each(|(row, (c, s))| {
            for head in row.chunks_mut(hd) {
                let (x1, rest) = head.split_at_mut(half);
                let x2 = &mut rest[..half];
                for i in 0..half {
                    let (a, b) = (x1[i], x2[i]);
                    let s = if inverse { T::ZERO - s[i] } else { s[i] };
                    x1[i] = a * c[i] - b * s;
                    x2[i] = b * c[i] + a * s;
                }
            }
        });
}

/// Per-head RMSNorm of `x [n, heads * hd]` in place; returns its input and inverse RMS.
fn head_norm<T: Real>(x: &mut [T], w: &[T], eps: f64) -> Normed<T> {
    let input = x.to_vec();
    let mut inv = vec![0.0; x.len() / w.len()];
    inv_rms_rows(&input, w.len(), eps, &mut inv);
    apply_rows(&input, w, &inv, x);
    Normed { x: input, inv }
}

/// Scratch buffers reused across blocks.
pub struct Scratch<T> {
    h: Vec<T>,
    wide: Vec<T>,
    d_wide: Vec<T>,
    dh: Vec<T>,
    d_attn: Vec<T>,
    d_norm: Vec<T>,
    dq: Vec<T>,
    dk: Vec<T>,
    dv: Vec<T>,
    t: Vec<T>,
}

impl<T> Default for Scratch<T> {
    fn default() -> Self {
        Scratch {
            h: Vec::new(),
            wide: Vec::new(),
            d_wide: Vec::new(),
            dh: Vec::new(),
            d_attn: Vec::new(),
            d_norm: Vec::new(),
            dq: Vec::new(),
            dk: Vec::new(),
            dv: Vec::new(),
            t: Vec::new(),
        }
    }
}

fn sized<T: Real>(buf: &mut Vec<T>, len: usize) -> &mut [T] {
    buf.resize(len, T::ZERO);
    &mut buf[..len]
}

/// `y = p(x)` into a fresh buffer of `n` rows.
fn project<T: Real>(p: &Proj<'_, T>, x: &[T], n: usize, u: &mut Vec<T>) -> Vec<T> {
    let mut y = vec![T::ZERO; n * p.out];
    p.forward(x, n, &mut y, false, u);
    y
}

/// `out = residual + p(x)`, or with a norm after `p`, `residual + norm(p(x))` (then `p(x)` is kept).
#[allow(clippy::too_many_arguments)]
fn residual_add<T: Real>(
    p: &Proj<'_, T>,
    norm: Option<&[T]>,
    x: &[T],
    n: usize,
    residual: &[T],
    eps: f64,
    u: &mut Vec<T>,
) -> (Vec<T>, Option<Normed<T>>) {
    let mut out = residual.to_vec();
    match norm {
        None => {
            p.forward(x, n, &mut out, true, u);
            (out, None)
        }
        Some(w) => {
            let y = project(p, x, n, u);
            let mut inv = vec![0.0; n];
            inv_rms_rows(&y, w.len(), eps, &mut inv);
            apply_rows_add(&y, w, &inv, &mut out);
            (out, Some(Normed { x: y, inv }))
        }
    }
}

/// The attention inputs of a block: q, k, v after their norms and rope, with what produced them.
pub struct Qkv<T> {
    pub q: Vec<T>,
    pub k: Vec<T>,
    pub v: Vec<T>,
    q_pre: Option<Normed<T>>,
    k_pre: Option<Normed<T>>,
    inv1: Vec<f64>,
    /// `x a^T` of each projection (the attention inputs' now, the others' in [`tail`]).
    pub u: Vec<Vec<T>>,
}

/// q, k and v of input `x [n, hidden]`, rotated by `table` (one row of angles per row of `x`).
pub fn qkv<T: Real>(
    w: &BlockWeights<'_, T>,
    c: &Context<'_, T>,
    x: &[T],
    table: &RopeTable<T>,
    scratch: &mut Scratch<T>,
) -> Qkv<T> {
    let (n, d) = (c.n, c.hidden);
    let (qw, kvw) = (c.heads * c.hd, c.kv * c.hd);
    let mut u: Vec<Vec<T>> = vec![Vec::new(); w.projections.len()];
    let mut inv1 = vec![0.0; n];
    inv_rms_rows(x, d, c.eps, &mut inv1);
    let h = sized(&mut scratch.h, n * d);
    apply_rows(x, w.input_norm, &inv1, h);
    let (mut q, mut k, mut v) = (
        vec![T::ZERO; n * qw],
        vec![T::ZERO; n * kvw],
        vec![T::ZERO; n * kvw],
    );
    if w.fused_qkv() {
        let i = w.at(Role::Qkv);
        let qkv = project(&w.projections[i], h, n, &mut u[i]);
        split_columns(&qkv, n, &mut [&mut q, &mut k, &mut v]);
    } else {
        for (role, y) in QKV.into_iter().zip([&mut q, &mut k, &mut v]) {
            let i = w.at(role);
            w.projections[i].forward(h, n, y, false, &mut u[i]);
        }
    }
    let q_pre = w.q_norm.map(|qn| head_norm(&mut q, qn, c.eps));
    let k_pre = w.k_norm.map(|kn| head_norm(&mut k, kn, c.eps));
    rope(&mut q, c.heads, c.hd, table, false);
    rope(&mut k, c.kv, c.hd, table, false);
    Qkv {
        q,
        k,
        v,
        q_pre,
        k_pre,
        inv1,
        u,
    }
}

/// The rest of a block after attention: o and its residual, the MLP and its residual.
pub struct Tail<T> {
    pub out: Vec<T>,
    o_out: Option<Normed<T>>,
    x2: Vec<T>,
    inv2: Vec<f64>,
    gate: Vec<T>,
    up: Vec<T>,
    m: Option<Normed<T>>,
    moe: Option<experts::Saved<T>>,
}

/// The block's output from its input `x` and its attention output `attn`.
pub fn tail<T: Real>(
    w: &BlockWeights<'_, T>,
    c: &Context<'_, T>,
    x: &[T],
    attn: &[T],
    scratch: &mut Scratch<T>,
    u: &mut [Vec<T>],
) -> Tail<T> {
    let (n, d) = (c.n, c.hidden);
    let oi = w.at(Role::O);
    let (x2, o_out) = residual_add(
        &w.projections[oi],
        w.post_attention_norm,
        attn,
        n,
        x,
        c.eps,
        &mut u[oi],
    );
    let mut inv2 = vec![0.0; n];
    inv_rms_rows(&x2, d, c.eps, &mut inv2);
    let h = sized(&mut scratch.h, n * d);
    apply_rows(&x2, w.mlp_norm, &inv2, h);
    if let Some(e) = &w.experts {
        let mut out = x2.clone();
        let moe = Some(experts::forward(e, c.activation, h, n, &mut out));
        return Tail {
            out,
            o_out,
            x2,
            inv2,
            gate: Vec::new(),
            up: Vec::new(),
            m: None,
            moe,
        };
    }
    let di = w.at(Role::Down);
    let down = &w.projections[di];
    let f = down.inp;
    let (mut gate, mut up) = (vec![T::ZERO; n * f], vec![T::ZERO; n * f]);
    if w.fused_gate_up() {
        let i = w.at(Role::GateUp);
        let gate_up = project(&w.projections[i], h, n, &mut u[i]);
        split_columns(&gate_up, n, &mut [&mut gate, &mut up]);
    } else {
        let (gi, ui) = (w.at(Role::Gate), w.at(Role::Up));
        w.projections[gi].forward(h, n, &mut gate, false, &mut u[gi]);
        w.projections[ui].forward(h, n, &mut up, false, &mut u[ui]);
    }
    let a = sized(&mut scratch.wide, n * f);
    glu::forward(c.activation, &gate, &up, a);
    let (out, m) = residual_add(down, w.post_mlp_norm, a, n, &x2, c.eps, &mut u[di]);
    Tail {
        out,
        o_out,
        x2,
        inv2,
        gate,
        up,
        m,
        moe: None,
    }
}

/// The block's output for input `x [n, hidden]`, and what its backward needs.
pub fn forward<T: Real>(
    w: &BlockWeights<'_, T>,
    c: &Context<'_, T>,
    x: Vec<T>,
    scratch: &mut Scratch<T>,
) -> (Vec<T>, Saved<T>) {
    let Qkv {
        q,
        k,
        v,
        q_pre,
        k_pre,
        inv1,
        mut u,
    } = qkv(w, c, &x, &c.ropes[w.rope], scratch);
    let qw = c.heads * c.hd;
    let mut attn = vec![T::ZERO; c.n * qw];
    let mut lse = vec![T::ZERO; c.n * c.heads];
    let layout = c.layout(w.window, w.sinks.as_deref());
    attention::forward(&q, &k, &v, c.segments, layout, &mut attn, &mut lse);
    let Tail {
        out,
        o_out,
        x2,
        inv2,
        gate,
        up,
        m,
        moe,
    } = tail(w, c, &x, &attn, scratch, &mut u);
    let saved = Saved {
        x,
        inv1,
        q,
        k,
        v,
        q_pre,
        k_pre,
        attn,
        lse,
        o_out,
        x2,
        inv2,
        gate,
        up,
        m,
        moe,
        u,
    };
    (out, saved)
}

/// The gradient reaching projection output `y` whose result went through an optional norm: `dx` itself,
/// or the norm's input gradient (written into `buf`).
fn through_norm<'b, T: Real>(
    normed: &Option<Normed<T>>,
    w: Option<&[T]>,
    dx: &'b [T],
    buf: &'b mut Vec<T>,
) -> &'b [T] {
    match (normed, w) {
        (Some(normed), Some(w)) => {
            let out = sized(buf, dx.len());
            backward_rows(&normed.x, w, &normed.inv, dx, out, false);
            out
        }
        _ => dx,
    }
}

/// Turns `dx`, the gradient of the block's output, into the gradient of its input, adding the LoRA
/// gradients to `grads` (one slot per projection, then a sparse block's two fused expert slots).
pub fn backward<T: Real>(
    w: &BlockWeights<'_, T>,
    c: &Context<'_, T>,
    mut s: Saved<T>,
    dx: &mut [T],
    grads: &mut [Option<LoraGrad<T>>],
    scratch: &mut Scratch<T>,
) {
    let (n, d) = (c.n, c.hidden);
    let (qw, kvw) = (c.heads * c.hd, c.kv * c.hd);
    let oi = w.at(Role::O);
    let Scratch {
        h,
        wide,
        d_wide,
        dh,
        d_attn,
        d_norm,
        dq,
        dk,
        dv,
        t,
    } = scratch;
    // MLP: dx is also the gradient of x2 through the residual.
    let h2 = sized(h, n * d);
    apply_rows(&s.x2, w.mlp_norm, &s.inv2, h2);
    let dh2 = sized(dh, n * d);
    match (&w.experts, s.moe.take()) {
        (Some(e), Some(saved)) => {
            dh2.fill(T::ZERO);
            let fused: &mut [Option<LoraGrad<T>>; 3] = (&mut grads[w.projections.len()..])
                .try_into()
                .expect("three expert gradient slots after the projections'");
            experts::backward(e, c.activation, saved, h2, n, dx, dh2, fused);
        }
        _ => {
            let di = w.at(Role::Down);
            let down = &w.projections[di];
            let f = down.inp;
            let a = sized(wide, n * f);
            glu::forward(c.activation, &s.gate, &s.up, a);
            let da = sized(d_wide, n * f);
            {
                let dy = through_norm(&s.m, w.post_mlp_norm, dx, d_norm);
                down.backward(a, dy, &s.u[di], n, da, false, grads[di].as_mut(), t);
            }
            glu::backward(c.activation, &mut s.gate, &mut s.up, da);
            if w.fused_gate_up() {
                let joined = sized(wide, n * 2 * f);
                join_columns(&[&s.gate, &s.up], n, joined);
                let i = w.at(Role::GateUp);
                w.projections[i].backward(h2, joined, &s.u[i], n, dh2, false, grads[i].as_mut(), t);
            } else {
                let (gi, ui) = (w.at(Role::Gate), w.at(Role::Up));
                w.projections[gi].backward(
                    h2,
                    &s.gate,
                    &s.u[gi],
                    n,
                    dh2,
                    false,
                    grads[gi].as_mut(),
                    t,
                );
                w.projections[ui].backward(
                    h2,
                    &s.up,
                    &s.u[ui],
                    n,
                    dh2,
                    true,
                    grads[ui].as_mut(),
                    t,
                );
            }
        }
    }
    backward_rows(&s.x2, w.mlp_norm, &s.inv2, dh2, dx, true);
    // Attention.
    let d_attn = sized(d_attn, n * qw);
    {
        let dy = through_norm(&s.o_out, w.post_attention_norm, dx, d_norm);
        let o = &w.projections[oi];
        o.backward(
            &s.attn,
            dy,
            &s.u[oi],
            n,
            d_attn,
            false,
            grads[oi].as_mut(),
            t,
        );
    }
    let (dq, dk, dv) = (sized(dq, n * qw), sized(dk, n * kvw), sized(dv, n * kvw));
    let saved = attention::Saved {
        q: &s.q,
        k: &s.k,
        v: &s.v,
        out: &s.attn,
        lse: &s.lse,
    };
    attention::backward(
        &saved,
        d_attn,
        c.segments,
        c.layout(w.window, w.sinks.as_deref()),
        dq,
        dk,
        dv,
    );
    let table = &c.ropes[w.rope];
    rope(dq, c.heads, c.hd, table, true);
    rope(dk, c.kv, c.hd, table, true);
    // Through the q/k norms: their input gradients replace dq and dk.
    for (normed, weight, grad) in [
        (&s.q_pre, w.q_norm, &mut *dq),
        (&s.k_pre, w.k_norm, &mut *dk),
    ] {
        if let (Some(normed), Some(weight)) = (normed, weight) {
            let out = sized(d_norm, grad.len());
            backward_rows(&normed.x, weight, &normed.inv, grad, out, false);
            grad.copy_from_slice(out);
        }
    }
    let h1 = sized(h, n * d);
    apply_rows(&s.x, w.input_norm, &s.inv1, h1);
    let dh1 = sized(dh, n * d);
    if w.fused_qkv() {
        let joined = sized(wide, n * (qw + 2 * kvw));
        join_columns(&[&*dq, &*dk, &*dv], n, joined);
        let i = w.at(Role::Qkv);
        w.projections[i].backward(h1, joined, &s.u[i], n, dh1, false, grads[i].as_mut(), t);
    } else {
        for (j, (role, dy)) in QKV.into_iter().zip([&*dq, &*dk, &*dv]).enumerate() {
            let i = w.at(role);
            let p = &w.projections[i];
            p.backward(h1, dy, &s.u[i], n, dh1, j > 0, grads[i].as_mut(), t);
        }
    }
    backward_rows(&s.x, w.input_norm, &s.inv1, dh1, dx, true);
}
