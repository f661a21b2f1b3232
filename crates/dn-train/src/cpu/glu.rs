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

/// `act(x)` and `act'(x)`.
fn act_and_grad<T: Real>(act: Activation, x: T) -> (T, T) {
    match act {
        Activation::Silu => {
            let sig = sigmoid(x);
            (x * sig, sig * (T::ONE + x * (T::ONE - sig)))
        }
        Activation::GeluTanh => {
            let (beta, kappa, half) = (
                T::from_f64(GELU_BETA),
                T::from_f64(GELU_KAPPA),
                T::from_f64(0.5),
            );
            let t = (beta * (x + kappa * x * x * x)).tanh();
            let value = half * x * (T::ONE + t);
            let three = T::from_f64(3.0);
            let grad = half * (T::ONE + t)
                + half * x * (T::ONE - t * t) * beta * (T::ONE + three * kappa * x * x);
            (value, grad)
        }
    }
}

fn act<T: Real>(act: Activation, x: T) -> T {
    match act {
        Activation::Silu => x * sigmoid(x),
        Activation::GeluTanh => {
            let (beta, kappa, half) = (
                T::from_f64(GELU_BETA),
                T::from_f64(GELU_KAPPA),
                T::from_f64(0.5),
            );
            half * x * (T::ONE + (beta * (x + kappa * x * x * x)).tanh())
        }
    }
}

/// `a = act(gate) * up`.
pub fn forward<T: Real>(activation: Activation, gate: &[T], up: &[T], a: &mut [T]) {
    a.par_chunks_mut(CHUNK)
        .zip(gate.par_chunks(CHUNK).zip(up.par_chunks(CHUNK)))
        .for_each(|(a, (g, u))| {
            for ((a, g), u) in a.iter_mut().zip(g).zip(u) {
                *a = act(activation, *g) * *u;
            }
        });
}

/// Replaces `gate` and `up` by their gradients given `da`.
pub fn backward<T: Real>(activation: Activation, gate: &mut [T], up: &mut [T], da: &[T]) {
    gate.par_chunks_mut(CHUNK)
        .zip(up.par_chunks_mut(CHUNK).zip(da.par_chunks(CHUNK)))
        .for_each(|(g, (u, da))| {
            for ((g, u), da) in g.iter_mut().zip(u.iter_mut()).zip(da) {
                let (value, grad) = act_and_grad(activation, *g);
                let dg = *da * *u * grad;
                *u = *da * value;
                *g = dg;
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derivatives_match_finite_differences() {
        for activation in [Activation::Silu, Activation::GeluTanh] {
            for x in [-3.0f64, -0.7, 0.0, 0.4, 2.5] {
                let h = 1e-6;
                let numeric = (act(activation, x + h) - act(activation, x - h)) / (2.0 * h);
                let (_, grad) = act_and_grad(activation, x);
                assert!((numeric - grad).abs() < 1e-8, "{activation:?} at {x}");
            }
        }
        // gelu_pytorch_tanh(1) = 0.841192
        assert!((act(Activation::GeluTanh, 1.0f64) - 0.841_191_990_608_276_8).abs() < 1e-9);
    }
}
