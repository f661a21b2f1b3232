//! A sparse block's mixture of experts as a candle graph: the router's softmax (in f32 at least) from
//! primitives that record a backward, the top-k chosen on the host (`crate::routing`: the one read-back
//! per sparse block), the chosen probabilities gathered on the graph (so the router's input gets its
//! gradient), then per expert one `index_select` of its tokens, its gate_up and down products with its
//! LoRA pairs, and one `index_add` of the weighted result: ops with CUDA kernels, no per-token loop.

use candle_core::{D, DType, Device, Tensor};
use dn_arch::{Activation, ClampedSwiglu};

use super::layers::gelu_tanh;
use crate::error::Result;
use crate::lora::LoraPair;
use crate::model::{ExpertMlp, FrozenExperts, compute_dtype};
use crate::routing::Routing;

/// The frozen `[out, in]` slice of expert `e` of a fused `[experts, out, in]` tensor, applied as `x W^T`.
fn expert_product(x: &Tensor, fused: &FrozenExperts, e: usize) -> Result<Tensor> {
    fused.expert(e, x.dtype())?.forward(x)
}

/// `scale * (x A_e^T) B_e^T` of expert `e`'s pair (rows `e * r..` of A; columns `k * experts + e` of B).
fn expert_delta(pair: &LoraPair, e: usize, x: &Tensor, track: bool) -> Result<Tensor> {
    let (a, b) = if track {
        (pair.a.as_tensor().clone(), pair.b.as_tensor().clone())
    } else {
        (pair.a.as_tensor().detach(), pair.b.as_tensor().detach())
    };
    let r = pair.rank();
    let out = b.dim(0)?;
    let a_e = a.narrow(0, e * r, r)?;
    let b_e = b
        .reshape((out, r, pair.experts))?
        .narrow(2, e, 1)?
        .squeeze(2)?;
    let down = x.to_dtype(a.dtype())?.matmul(&a_e.t()?)?;
    Ok(down.matmul(&(b_e * pair.scale)?.t()?)?)
}

/// `x W_e^T` plus expert `e`'s LoRA delta, in `x`'s dtype.
fn project(
    x: &Tensor,
    fused: &FrozenExperts,
    pair: Option<&LoraPair>,
    e: usize,
    track: bool,
) -> Result<Tensor> {
    let y = expert_product(x, fused, e)?;
    match pair {
        Some(pair) => Ok((y + expert_delta(pair, e, x, track)?.to_dtype(x.dtype())?)?),
        None => Ok(y),
    }
}

/// Router probabilities `[n, experts]` in f32 (f64 in f64): softmax from primitives.
fn router_probs(m: &ExpertMlp, h: &Tensor, track: bool) -> Result<Tensor> {
    let mut logits = m.router_logits(h, track)?;
    if let Some([bias, _, _]) = &m.biases {
        logits = logits.broadcast_add(bias)?;
    }
    let logits = logits.to_dtype(compute_dtype(logits.dtype()))?;
    let max = logits.max_keepdim(D::Minus1)?.detach();
    let exp = logits.broadcast_sub(&max)?.exp()?;
    Ok(exp.broadcast_div(&exp.sum_keepdim(D::Minus1)?)?)
}

/// The mixture's output `[n, hidden]` for the normed input `h [n, hidden]`, and its routing.
pub(crate) fn forward(
    m: &ExpertMlp,
    h: &Tensor,
    activation: Activation,
    track: bool,
) -> Result<(Tensor, Routing)> {
    let (n, d) = h.dims2()?;
    let f = m.spec.intermediate_size;
    let probs = router_probs(m, h, track)?;
    let host: Vec<f64> = probs.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?;
    let routing = Routing::new(&host, &m.spec);
    m.record_load(&routing.load());
    let device: &Device = h.device();
    let k = routing.top_k;
    let chosen: Vec<u32> = routing.experts.iter().map(|e| *e as u32).collect();
    let chosen = Tensor::from_vec(chosen, (n, k), device)?;
    let mut weights = probs.gather(&chosen, 1)?;
    if m.spec.normalize_top_k {
        weights = weights.broadcast_div(&weights.sum_keepdim(1)?)?;
    }
    let weights = weights.to_dtype(h.dtype())?.flatten_all()?;
    let mut out = Tensor::zeros((n, d), h.dtype(), device)?;
    for e in 0..m.spec.count {
        let slots = routing.slots(e);
        if slots.is_empty() {
            continue;
        }
        let tokens: Vec<u32> = slots.iter().map(|s| (s / k) as u32).collect();
        let tokens = Tensor::new(tokens.as_slice(), device)?;
        let slots: Vec<u32> = slots.iter().map(|s| *s as u32).collect();
        let slots = Tensor::new(slots.as_slice(), device)?;
        let x = h.index_select(&tokens, 0)?;
        let mut gate_up = project(&x, &m.gate_up, m.gate_up_lora.as_ref(), e, track)?;
        if let Some([_, bias, _]) = &m.biases {
            gate_up = gate_up.broadcast_add(&bias.get(e)?)?;
        }
        let (gate, up) = if m.spec.interleaved {
            let pairs = gate_up.reshape((slots.dim(0)?, f, 2))?;
            (
                pairs.narrow(2, 0, 1)?.squeeze(2)?,
                pairs.narrow(2, 1, 1)?.squeeze(2)?,
            )
        } else {
            (gate_up.narrow(1, 0, f)?, gate_up.narrow(1, f, f)?)
        };
        let inner = match m.spec.clamped_swiglu {
            Some(ClampedSwiglu { alpha, limit }) => {
                let gate = gate.minimum(limit)?;
                let up = up.clamp(-limit, limit)?;
                let sigmoid = ((&gate * alpha)?.neg()?.exp()? + 1.0)?.recip()?;
                ((up + 1.0)? * (gate * sigmoid)?)?
            }
            None => {
                let act = match activation {
                    Activation::Silu => gate.silu()?,
                    Activation::GeluTanh => gelu_tanh(&gate)?,
                };
                (act * up)?
            }
        };
        let mut y = project(&inner, &m.down, m.down_lora.as_ref(), e, track)?;
        if let Some([_, _, bias]) = &m.biases {
            y = y.broadcast_add(&bias.get(e)?)?;
        }
        let w = weights.index_select(&slots, 0)?.unsqueeze(1)?;
        out = out.index_add(&tokens, &y.broadcast_mul(&w)?, 0)?;
    }
    if let Some(s) = &m.shared {
        let act = match activation {
            Activation::Silu => s.gate.forward(h)?.silu()?,
            Activation::GeluTanh => gelu_tanh(&s.gate.forward(h)?)?,
        };
        let y = s.down.forward(&(act * s.up.forward(h)?)?)?;
        let sigmoid = (s.scale.forward(h)?.neg()?.exp()? + 1.0)?.recip()?;
        out = (out + y.broadcast_mul(&sigmoid)?)?;
    }
    Ok((out, routing))
}
