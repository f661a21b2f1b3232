//! One decoder block, forward and hand-written backward, on borrowed weight slices and caller-owned
//! buffers. The forward keeps only what the backward cannot cheaply redo: the block's input, the attention
//! inputs after rope, the attention output and log-sum-exp, the residual after attention, the gate and up
//! projections and the LoRA down-projections `x A^T`; norms and the SwiGLU product are recomputed.

use rayon::prelude::*;

use super::attention::{self, Heads};
use super::matmul::{Mat, MatMut, Threads, matmul};
use crate::kernels::Real;
use crate::norm::{apply_rows, backward_rows, inv_rms_rows};

/// A LoRA pair's tensors: `a [rank, in]`, `b [out, rank]`, applied as `scale * (x a^T) b^T`.
pub struct Lora<'a, T> {
    pub a: &'a [T],
    pub b: &'a [T],
    pub rank: usize,
    pub scale: T,
}

/// A frozen projection `w [out, in]` and its optional LoRA pair.
pub struct Proj<'a, T> {
    pub w: &'a [T],
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

    /// `y (+)= x w^T + scale * (x a^T) b^T` for `x [n, in]`; `x a^T` goes to `u`.
    fn forward(&self, x: &[T], n: usize, y: &mut [T], accumulate: bool, u: &mut Vec<T>) {
        let x = Mat::new(x, n, self.inp);
        let w = Mat::new(self.w, self.out, self.inp).t();
        matmul(
            MatMut::new(y, n, self.out),
            x,
            w,
            T::ONE,
            accumulate,
            Threads::All,
        );
        if let Some(l) = &self.lora {
            u.clear();
            u.resize(n * l.rank, T::ZERO);
            let a = Mat::new(l.a, l.rank, self.inp).t();
            matmul(MatMut::new(u, n, l.rank), x, a, T::ONE, false, Threads::All);
            let b = Mat::new(l.b, self.out, l.rank).t();
            let dst = MatMut::new(y, n, self.out);
            matmul(dst, Mat::new(u, n, l.rank), b, l.scale, true, Threads::All);
        }
    }

    /// `dx (+)= dy w + scale * (dy b) a`, and the LoRA gradients `da += scale * (dy b)^T x`,
    /// `db += scale * dy^T u`.
    #[allow(clippy::too_many_arguments)]
    fn backward(
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
        let w = Mat::new(self.w, self.out, self.inp);
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

/// A block's weights, in the order of the forward.
pub struct BlockWeights<'a, T> {
    pub input_norm: &'a [T],
    pub q: Proj<'a, T>,
    pub k: Proj<'a, T>,
    pub v: Proj<'a, T>,
    pub o: Proj<'a, T>,
    pub post_norm: &'a [T],
    pub gate: Proj<'a, T>,
    pub up: Proj<'a, T>,
    pub down: Proj<'a, T>,
}

impl<'a, T> BlockWeights<'a, T> {
    pub fn projections(&self) -> [&Proj<'a, T>; 7] {
        [
            &self.q, &self.k, &self.v, &self.o, &self.gate, &self.up, &self.down,
        ]
    }
}

/// Shapes and constants shared by every block of a batch.
pub struct Context<'a, T> {
    pub n: usize,
    pub hidden: usize,
    pub heads: Heads,
    pub eps: f64,
    pub segments: &'a [(usize, usize)],
    /// `[n, head_dim / 2]` cos and sin of each token's rotary angles.
    pub cos: &'a [T],
    pub sin: &'a [T],
}

/// What the forward keeps for the backward (see the module doc).
pub struct Saved<T> {
    x: Vec<T>,
    inv1: Vec<f64>,
    q: Vec<T>,
    k: Vec<T>,
    v: Vec<T>,
    attn: Vec<T>,
    lse: Vec<T>,
    x2: Vec<T>,
    inv2: Vec<f64>,
    gate: Vec<T>,
    up: Vec<T>,
    /// `x a^T` of q, k, v, o, gate, up, down.
    u: [Vec<T>; 7],
}

/// Rotates each head of `x [n, heads * hd]` by its token's angles (transformers' rotate_half); `inverse`
/// rotates back, which is the backward.
fn rope<T: Real>(x: &mut [T], heads: usize, hd: usize, cos: &[T], sin: &[T], inverse: bool) {
    let half = hd / 2;
    x.par_chunks_mut(heads * hd)
        .zip(cos.par_chunks(half).zip(sin.par_chunks(half)))
        .for_each(|(row, (c, s))| {
            for head in row.chunks_mut(hd) {
                let (x1, x2) = head.split_at_mut(half);
                for i in 0..half {
                    let (a, b) = (x1[i], x2[i]);
                    let s = if inverse { T::ZERO - s[i] } else { s[i] };
                    x1[i] = a * c[i] - b * s;
                    x2[i] = b * c[i] + a * s;
                }
            }
        });
}

fn sigmoid<T: Real>(x: T) -> T {
    T::ONE / (T::ONE + (T::ZERO - x).exp())
}

/// `a = silu(gate) * up`.
fn swiglu<T: Real>(gate: &[T], up: &[T], a: &mut [T]) {
    a.par_chunks_mut(4096)
        .zip(gate.par_chunks(4096).zip(up.par_chunks(4096)))
        .for_each(|(a, (g, u))| {
            for ((a, g), u) in a.iter_mut().zip(g).zip(u) {
                *a = *g * sigmoid(*g) * *u;
            }
        });
}

/// Replaces `gate` and `up` by their gradients given `da`.
fn swiglu_backward<T: Real>(gate: &mut [T], up: &mut [T], da: &[T]) {
    gate.par_chunks_mut(4096)
        .zip(up.par_chunks_mut(4096).zip(da.par_chunks(4096)))
        .for_each(|(g, (u, da))| {
            for ((g, u), da) in g.iter_mut().zip(u.iter_mut()).zip(da) {
                let sig = sigmoid(*g);
                let silu = *g * sig;
                let d_silu = sig * (T::ONE + *g * (T::ONE - sig));
                let dg = *da * *u * d_silu;
                *u = *da * silu;
                *g = dg;
            }
        });
}

/// Scratch buffers reused across blocks.
pub struct Scratch<T> {
    h: Vec<T>,
    wide: Vec<T>,
    d_wide: Vec<T>,
    dh: Vec<T>,
    d_attn: Vec<T>,
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

/// The block's output for input `x [n, hidden]`, and what its backward needs.
pub fn forward<T: Real>(
    w: &BlockWeights<'_, T>,
    c: &Context<'_, T>,
    x: Vec<T>,
    scratch: &mut Scratch<T>,
) -> (Vec<T>, Saved<T>) {
    let (n, d) = (c.n, c.hidden);
    let l = c.heads;
    let kvw = l.kv * l.hd;
    let mut u: [Vec<T>; 7] = Default::default();
    let mut inv1 = vec![0.0; n];
    inv_rms_rows(&x, d, c.eps, &mut inv1);
    let h = sized(&mut scratch.h, n * d);
    apply_rows(&x, w.input_norm, &inv1, h);
    let mut q = vec![T::ZERO; n * d];
    let mut k = vec![T::ZERO; n * kvw];
    let mut v = vec![T::ZERO; n * kvw];
    let [uq, uk, uv, uo, ug, uu, ud] = &mut u;
    w.q.forward(h, n, &mut q, false, uq);
    w.k.forward(h, n, &mut k, false, uk);
    w.v.forward(h, n, &mut v, false, uv);
    rope(&mut q, l.heads, l.hd, c.cos, c.sin, false);
    rope(&mut k, l.kv, l.hd, c.cos, c.sin, false);
    let mut attn = vec![T::ZERO; n * d];
    let mut lse = vec![T::ZERO; n * l.heads];
    attention::forward(&q, &k, &v, c.segments, l, &mut attn, &mut lse);
    let mut x2 = x.clone();
    w.o.forward(&attn, n, &mut x2, true, uo);
    let mut inv2 = vec![0.0; n];
    inv_rms_rows(&x2, d, c.eps, &mut inv2);
    let h = sized(&mut scratch.h, n * d);
    apply_rows(&x2, w.post_norm, &inv2, h);
    let f = w.gate.out;
    let mut gate = vec![T::ZERO; n * f];
    let mut up = vec![T::ZERO; n * f];
    w.gate.forward(h, n, &mut gate, false, ug);
    w.up.forward(h, n, &mut up, false, uu);
    let a = sized(&mut scratch.wide, n * f);
    swiglu(&gate, &up, a);
    let mut out = x2.clone();
    w.down.forward(a, n, &mut out, true, ud);
    let saved = Saved {
        x,
        inv1,
        q,
        k,
        v,
        attn,
        lse,
        x2,
        inv2,
        gate,
        up,
        u,
    };
    (out, saved)
}

/// Turns `dx`, the gradient of the block's output, into the gradient of its input, adding the LoRA
/// gradients to `grads` (q, k, v, o, gate, up, down).
pub fn backward<T: Real>(
    w: &BlockWeights<'_, T>,
    c: &Context<'_, T>,
    mut s: Saved<T>,
    dx: &mut [T],
    grads: &mut [Option<LoraGrad<T>>],
    scratch: &mut Scratch<T>,
) {
    let (n, d) = (c.n, c.hidden);
    let l = c.heads;
    let kvw = l.kv * l.hd;
    let f = w.gate.out;
    let [gq, gk, gv, go, gg, gu, gd] = grads else {
        panic!("block backward: seven gradient slots");
    };
    let Scratch {
        h,
        wide,
        d_wide,
        dh,
        d_attn,
        dq,
        dk,
        dv,
        t,
    } = scratch;
    // MLP: dx is also the gradient of x2 through the residual.
    let a = sized(wide, n * f);
    swiglu(&s.gate, &s.up, a);
    let da = sized(d_wide, n * f);
    w.down
        .backward(a, dx, &s.u[6], n, da, false, gd.as_mut(), t);
    swiglu_backward(&mut s.gate, &mut s.up, da);
    let h2 = sized(h, n * d);
    apply_rows(&s.x2, w.post_norm, &s.inv2, h2);
    let dh2 = sized(dh, n * d);
    w.gate
        .backward(h2, &s.gate, &s.u[4], n, dh2, false, gg.as_mut(), t);
    w.up.backward(h2, &s.up, &s.u[5], n, dh2, true, gu.as_mut(), t);
    backward_rows(&s.x2, w.post_norm, &s.inv2, dh2, dx, true);
    // Attention.
    let d_attn = sized(d_attn, n * d);
    w.o.backward(&s.attn, dx, &s.u[3], n, d_attn, false, go.as_mut(), t);
    let (dq, dk, dv) = (sized(dq, n * d), sized(dk, n * kvw), sized(dv, n * kvw));
    let saved = attention::Saved {
        q: &s.q,
        k: &s.k,
        v: &s.v,
        out: &s.attn,
        lse: &s.lse,
    };
    attention::backward(&saved, d_attn, c.segments, l, dq, dk, dv);
    rope(dq, l.heads, l.hd, c.cos, c.sin, true);
    rope(dk, l.kv, l.hd, c.cos, c.sin, true);
    let h1 = sized(h, n * d);
    apply_rows(&s.x, w.input_norm, &s.inv1, h1);
    let dh1 = sized(dh, n * d);
    w.q.backward(h1, dq, &s.u[0], n, dh1, false, gq.as_mut(), t);
    w.k.backward(h1, dk, &s.u[1], n, dh1, true, gk.as_mut(), t);
    w.v.backward(h1, dv, &s.u[2], n, dh1, true, gv.as_mut(), t);
    backward_rows(&s.x, w.input_norm, &s.inv1, dh1, dx, true);
}
