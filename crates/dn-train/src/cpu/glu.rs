//! The gated MLP activation `a = act(gate) * up` and its backward, for SwiGLU (`silu`) and GeGLU (GELU,
//! tanh approximation, as `gelu_pytorch_tanh`), rows in parallel.

use dn_arch::Activation;
use rayon::prelude::*;

use crate::kernels::Real;

const CHUNK: usize = 4096;
/// sqrt(2 / pi) and the cubic coefficient of the tanh approximation.
const GELU_BETA: f64 = 0.797_884_560_802_865_4;
const GELU_KAPPA: f64 = 0.044715;

fn sigmoid<T: Real>(x: T) -> T {
    T::ONE / (T::ONE + (T::ZERO - x).exp())
}

fn silu<T: Real>(x: T) -> T {
    x * sigmoid(x)
}

fn silu_and_grad<T: Real>(x: T) -> (T, T) {
    let sig = sigmoid(x);
    (x * sig, sig * (T::ONE + x * (T::ONE - sig)))
}

/// `tanh(beta (x + kappa x^3))`.
fn gelu_tanh_inner<T: Real>(x: T) -> T {
    let (beta, kappa) = (T::from_f64(GELU_BETA), T::from_f64(GELU_KAPPA));
    (beta * (x + kappa * x * x * x)).tanh()
}

fn gelu_tanh<T: Real>(x: T) -> T {
    T::from_f64(0.5) * x * (T::ONE + gelu_tanh_inner(x))
}

fn gelu_tanh_and_grad<T: Real>(x: T) -> (T, T) {
    let (beta, kappa, half) = (
        T::from_f64(GELU_BETA),
        T::from_f64(GELU_KAPPA),
        T::from_f64(0.5),
    );
    let t = gelu_tanh_inner(x);
    let grad = half * (T::ONE + t)
        + half * x * (T::ONE - t * t) * beta * (T::ONE + T::from_f64(3.0) * kappa * x * x);
    (half * x * (T::ONE + t), grad)
}

/// `a = act(gate) * up`, with `act` chosen once (the element loops carry no branch).
fn forward_with<T: Real>(act: impl Fn(T) -> T + Sync, gate: &[T], up: &[T], a: &mut [T]) {
    a.par_chunks_mut(CHUNK)
        .zip(gate.par_chunks(CHUNK).zip(up.par_chunks(CHUNK)))
        .for_each(|(a, (g, u))| {
            for ((a, g), u) in a.iter_mut().zip(g).zip(u) {
                *a = act(*g) * *u;
            }
        });
}

/// `a = act(gate) * up`.
pub fn forward<T: Real>(activation: Activation, gate: &[T], up: &[T], a: &mut [T]) {
    match activation {
        Activation::Silu => forward_with(silu, gate, up, a),
        Activation::GeluTanh => forward_with(gelu_tanh, gate, up, a),
    }
}

fn backward_with<T: Real>(
    act_and_grad: impl Fn(T) -> (T, T) + Sync,
    gate: &mut [T],
    up: &mut [T],
    da: &[T],
) {
    gate.par_chunks_mut(CHUNK)
        .zip(up.par_chunks_mut(CHUNK).zip(da.par_chunks(CHUNK)))
        .for_each(|(g, (u, da))| {
            for ((g, u), da) in g.iter_mut().zip(u.iter_mut()).zip(da) {
                let (value, grad) = act_and_grad(*g);
                let dg = *da * *u * grad;
                *u = *da * value;
                *g = dg;
            }
        });
}

/// Replaces `gate` and `up` by their gradients given `da`.
pub fn backward<T: Real>(activation: Activation, gate: &mut [T], up: &mut [T], da: &[T]) {
    match activation {
        Activation::Silu => backward_with(silu_and_grad, gate, up, da),
        Activation::GeluTanh => backward_with(gelu_tanh_and_grad, gate, up, da),
    }
}

/// gpt-oss's clamped SwiGLU: `gate' = min(gate, limit)`, `up' = clamp(up, -limit, limit)`,
/// `a = (up' + 1) * gate' * sigmoid(alpha * gate')`.
pub fn clamped_forward<T: Real>(alpha: f64, limit: f64, gate: &[T], up: &[T], a: &mut [T]) {
    let (alpha, limit) = (T::from_f64(alpha), T::from_f64(limit));
    a.par_chunks_mut(CHUNK)
        .zip(gate.par_chunks(CHUNK).zip(up.par_chunks(CHUNK)))
        .for_each(|(a, (g, u))| {
            for ((a, g), u) in a.iter_mut().zip(g).zip(u) {
                let g = if *g > limit { limit } else { *g };
                let u = clamp(*u, limit);
                *a = (u + T::ONE) * g * sigmoid(alpha * g);
            }
        });
}

fn clamp<T: Real>(x: T, limit: T) -> T {
    if x > limit {
        limit
    } else if x < T::ZERO - limit {
        T::ZERO - limit
    } else {
        x
    }
}

/// Replaces `gate` and `up` by their gradients given `da` (none through a clamped side).
pub fn clamped_backward<T: Real>(alpha: f64, limit: f64, gate: &mut [T], up: &mut [T], da: &[T]) {
    let (alpha, limit) = (T::from_f64(alpha), T::from_f64(limit));
    gate.par_chunks_mut(CHUNK)
        .zip(up.par_chunks_mut(CHUNK).zip(da.par_chunks(CHUNK)))
        .for_each(|(g, (u, da))| {
            for ((g, u), da) in g.iter_mut().zip(u.iter_mut()).zip(da) {
                let (g_in, u_in) = (*g, *u);
                let gc = if g_in > limit { limit } else { g_in };
                let uc = clamp(u_in, limit);
                let s = sigmoid(alpha * gc);
                let glu = gc * s;
                *u = if u_in > limit || u_in < T::ZERO - limit {
                    T::ZERO
                } else {
                    *da * glu
                };
                *g = if g_in > limit {
                    T::ZERO
                } else {
                    *da * (uc + T::ONE) * (s + gc * alpha * s * (T::ONE - s))
                };
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clamped_swiglu_derivatives_match_finite_differences() {
        let (alpha, limit) = (1.702, 0.8);
        for (g, u) in [
            (-2.0f64, 0.3),
            (0.5, -0.6),
            (0.7, 1.2),
            (1.3, 0.1),
            (-0.2, -1.5),
        ] {
            let f = |g: f64, u: f64| {
                let mut a = [0.0];
                clamped_forward(alpha, limit, &[g], &[u], &mut a);
                a[0]
            };
            let h = 1e-6;
            let (mut dg, mut du) = ([g], [u]);
            clamped_backward(alpha, limit, &mut dg, &mut du, &[1.0]);
            let numeric_g = (f(g + h, u) - f(g - h, u)) / (2.0 * h);
            let numeric_u = (f(g, u + h) - f(g, u - h)) / (2.0 * h);
            assert!((numeric_g - dg[0]).abs() < 1e-8, "gate at {g}, {u}");
            assert!((numeric_u - du[0]).abs() < 1e-8, "up at {g}, {u}");
        }
    }

    #[test]
    fn derivatives_match_finite_differences() {
        type Act = fn(f64) -> f64;
        type ActAndGrad = fn(f64) -> (f64, f64);
        let pairs: [(Act, ActAndGrad); 2] =
            [(silu, silu_and_grad), (gelu_tanh, gelu_tanh_and_grad)];
        for (act, act_and_grad) in pairs {
            for x in [-3.0f64, -0.7, 0.0, 0.4, 2.5] {
                let h = 1e-6;
                let numeric = (act(x + h) - act(x - h)) / (2.0 * h);
                let (value, grad) = act_and_grad(x);
                assert!((numeric - grad).abs() < 1e-8, "at {x}");
                assert_eq!(value, act(x));
            }
        }
        // gelu_pytorch_tanh(1) = 0.841192
        assert!((gelu_tanh(1.0f64) - 0.841_191_990_608_276_8).abs() < 1e-9);
    }
}
