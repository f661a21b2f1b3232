//! The CPU training engine: the whole model's forward and hand-written backward for f32 (and f64, which
//! the gradient checks use) on the weights' own storage, with matmuls through `gemm` into reused buffers
//! and every other op fused and parallel across rows. It computes exactly what the candle graph in
//! `graph/` computes (the tests hold the two to each other and to finite differences) at a fraction of
//! the memory and time: no autograd graph, no weight gradients for frozen weights, no materialised
//! attention probabilities, no broadcast copies. The graph path remains for CUDA and half precision.
//!
//! `matmul` wraps `gemm` (candle's CPU matmul; the workspace turns on its AVX-512 kernels) on strided views
//! into reused buffers; `proj` is a projection with its bias and LoRA pair (and the column splits of fused
//! ones); `glu` the gated MLP activation (SiLU or tanh-GELU); `block` is one decoder block with every feature
//! of the description, its projections addressed by role (q/k/v or the fused qkv, o, gate/up or the fused
//! gate_up, down); it keeps the block input, q/k before their norms, post-rope q/k, v, the attention output
//! and log-sum-exp, the residual, gate/up, o and down outputs under sandwich norms, and the LoRA `x A^T`, and
//! recomputes the other norms and the activation. `attention` is causal attention per packed example by query
//! blocks of 128 rows against the keys the block sees (up to the block, from the window's start: half the
//! work of a full square, scratch linear in length), soft-capped where the family does, backward flash-style
//! from the log-sum-exp; `head` is the final norm, output head (soft-capped for Gemma 2) and cross-entropy on
//! supervised rows only, 512 rows at a time, turned into their gradient in place.

mod attention;
mod block;
pub mod decode;
mod experts;
mod glu;
mod head;
mod matmul;
mod proj;
mod simd;

use std::ops::{Deref, Range};

use candle_core::{Storage, Tensor};

use crate::batch::{Packed, Targets};
use crate::error::Result;
use crate::frozen::FrozenBase;
use crate::kernels::Real;
use crate::model::{ExpertMlp, FrozenExperts, Linear, LoraModel};
use block::{BlockWeights, Context, RopeTable, Scratch};
use experts::{ExpertWeights, FusedLora, SharedWeights};
use head::Head;
use proj::{Lora, LoraGrad, Proj};

/// A read lock on a tensor's storage and the range of its elements.
struct Borrowed<'t> {
    guard: Box<dyn Deref<Target = Storage> + 't>,
    range: Range<usize>,
}

impl<'t> Borrowed<'t> {
    fn new(t: &'t Tensor) -> Result<Self> {
        let (guard, layout) = t.storage_and_layout();
        let Some((start, end)) = layout.contiguous_offsets() else {
            return Err(
                candle_core::Error::Msg("cpu engine: a weight is not contiguous".into()).into(),
            );
        };
        Ok(Borrowed {
            guard: Box::new(guard),
            range: start..end,
        })
    }

    fn slice<T: Real>(&self) -> Result<&[T]> {
        match &**self.guard {
            Storage::Cpu(storage) => Ok(&storage.as_slice::<T>()?[self.range.clone()]),
            _ => {
                Err(candle_core::Error::Msg("cpu engine: a weight is not on the cpu".into()).into())
            }
        }
    }
}

/// Every tensor the engine reads, in the order [`views`] consumes them.
fn tensors(model: &LoraModel) -> Vec<&Tensor> {
    // The embedding and head are read through their matrices when kept quantized.
    let mut out: Vec<&Tensor> = model.embed.dense().into_iter().collect();
    out.push(&model.norm);
    out.extend(model.lm_head.dense());
    for b in &model.blocks {
        out.push(&b.input_norm);
        out.extend(b.norms().into_iter().flatten());
        for linear in &b.linears {
            // A quantized weight is read through its matrix, not a slice.
            out.extend(linear.base.dense());
            out.extend(&linear.bias);
            if let Some(pair) = &linear.lora {
                out.push(pair.a.as_tensor());
                out.push(pair.b.as_tensor());
            }
        }
        if let Some(e) = &b.experts {
            out.push(e.router.weight());
            out.extend(e.gate_up.dense());
            out.extend(e.down.dense());
            if let Some(s) = &e.shared {
                out.extend([
                    s.gate.weight(),
                    s.up.weight(),
                    s.down.weight(),
                    s.scale.weight(),
                ]);
            }
            out.extend(e.biases.iter().flatten());
            for pair in e.pairs() {
                out.push(pair.a.as_tensor());
                out.push(pair.b.as_tensor());
            }
        }
    }
    out
}

/// A sparse block's experts as slices, in [`tensors`]' order.
fn expert_views<'a, T: Real>(
    e: &'a ExpertMlp,
    hidden: usize,
    slices: &mut impl Iterator<Item = &'a [T]>,
) -> ExpertWeights<'a, T> {
    let mut next = || slices.next().expect("expert slice");
    let router = next();
    let mut fused = |f: &'a FrozenExperts| match f.quantized() {
        Some(q) => proj::Weight::Quantized(crate::quant::QuantRows::whole(q)),
        None => proj::Weight::Dense(slices.next().expect("expert slice")),
    };
    let (gate_up, down) = (fused(&e.gate_up), fused(&e.down));
    let mut next = || slices.next().expect("expert slice");
    let shared = e.shared.as_ref().map(|s| SharedWeights {
        gate: next(),
        up: next(),
        down: next(),
        scale: next(),
        width: s.gate.out_features(),
    });
    let biases = e.biases.as_ref().map(|_| [next(), next(), next()]);
    let router_lora = e.router_lora.as_ref().map(|p| Lora {
        a: slices.next().expect("router lora a"),
        b: slices.next().expect("router lora b"),
        rank: p.rank(),
        scale: T::from_f64(p.scale),
    });
    let mut fused = |pair: &Option<crate::lora::LoraPair>| {
        pair.as_ref().map(|p| FusedLora {
            a: slices.next().expect("expert lora a"),
            b: slices.next().expect("expert lora b"),
            rank: p.rank(),
            scale: T::from_f64(p.scale),
        })
    };
    let gate_up_lora = fused(&e.gate_up_lora);
    let down_lora = fused(&e.down_lora);
    ExpertWeights {
        spec: e.spec,
        hidden,
        router,
        router_lora,
        gate_up,
        down,
        gate_up_lora,
        down_lora,
        shared,
        biases,
        mlp: e,
    }
}

struct Weights<'a, T> {
    embed: proj::Weight<'a, T>,
    head: Head<'a, T>,
    blocks: Vec<BlockWeights<'a, T>>,
}

/// A frozen weight: its matrix when kept quantized, else the next slice.
fn frozen<'a, T: Real>(
    base: &'a FrozenBase,
    slices: &mut impl Iterator<Item = &'a [T]>,
) -> proj::Weight<'a, T> {
    match base.quantized() {
        Some(q) => proj::Weight::Quantized(crate::quant::QuantRows::whole(q)),
        None => proj::Weight::Dense(slices.next().expect("weight slice")),
    }
}

fn proj<'a, T: Real>(
    linear: &'a Linear,
    slices: &mut impl Iterator<Item = &'a [T]>,
) -> Proj<'a, T> {
    let w = frozen(&linear.base, slices);
    let bias = linear.bias.as_ref().map(|_| slices.next().expect("bias"));
    let lora = linear.lora.as_ref().map(|pair| proj::Lora {
        a: slices.next().expect("lora a"),
        b: slices.next().expect("lora b"),
        rank: pair.a.as_tensor().dims()[0],
        scale: T::from_f64(pair.scale),
    });
    Proj {
        w,
        bias,
        out: linear.base.out_features(),
        inp: linear.base.in_features(),
        lora,
    }
}

fn views<'a, T: Real>(model: &'a LoraModel, slices: &[&'a [T]]) -> Weights<'a, T> {
    let mut it = slices.iter().copied();
    let embed = frozen(&model.embed, &mut it);
    let norm = it.next().expect("norm");
    let head = Head {
        norm,
        w: frozen(&model.lm_head, &mut it),
        vocab: model.lm_head.out_features(),
        eps: model.config.rms_norm_eps,
        softcap: model.config.final_logit_softcap,
    };
    let blocks = model
        .blocks
        .iter()
        .map(|b| {
            let input_norm = it.next().expect("input norm");
            let [q_norm, k_norm, post_attention_norm, mlp_norm, post_mlp_norm] =
                b.norms().map(|n| n.map(|_| it.next().expect("norm")));
            let projections = b.linears.iter().map(|l| proj(l, &mut it)).collect();
            let roles = b.linears.iter().map(|l| l.role).collect();
            let experts = b
                .experts
                .as_ref()
                .map(|e| expert_views(e, model.config.hidden_size, &mut it));
            BlockWeights {
                input_norm,
                q_norm,
                k_norm,
                post_attention_norm,
                mlp_norm: mlp_norm.expect("mlp norm"),
                post_mlp_norm,
                projections,
                roles,
                experts,
                sinks: b.sinks.as_ref().map(|t| {
                    t.to_dtype(candle_core::DType::F64)
                        .and_then(|t| t.to_vec1::<f64>())
                        .expect("a sinks vector on the cpu")
                }),
                window: b.layer.window,
                rope: b.layer.rope,
            }
        })
        .collect();
    Weights {
        embed,
        head,
        blocks,
    }
}

/// Calls `f` with views of every weight of `model` as `T` slices (read locks held meanwhile).
fn with_views<T: Real, R>(
    model: &LoraModel,
    f: impl FnOnce(&Weights<'_, T>) -> Result<R>,
) -> Result<R> {
    let borrowed = tensors(model)
        .into_iter()
        .map(Borrowed::new)
        .collect::<Result<Vec<_>>>()?;
    let slices = borrowed
        .iter()
        .map(|b| b.slice::<T>())
        .collect::<Result<Vec<_>>>()?;
    f(&views(model, &slices))
}

/// Each rope setting's tables for rows given as spans `(first position, rows, length)` (see
/// [`LoraModel::rope_rows`]).
fn rope_tables<T: Real>(model: &LoraModel, spans: &[(usize, usize, usize)]) -> Vec<RopeTable<T>> {
    let c = &model.config;
    (0..c.ropes.len())
        .map(|i| {
            let (cos, sin) = model.rope_rows(i, spans);
            RopeTable {
                cos: cos.into_iter().map(T::from_f64).collect(),
                sin: sin.into_iter().map(T::from_f64).collect(),
                rotary: c.ropes[i].rotary_dim,
            }
        })
        .collect()
}

/// The shapes and constants of `n` packed rows of `model` in `segments`.
fn context<'a, T>(
    model: &LoraModel,
    n: usize,
    segments: &'a [(usize, usize)],
    ropes: &'a [RopeTable<T>],
) -> Context<'a, T> {
    let c = &model.config;
    Context {
        n,
        hidden: c.hidden_size,
        heads: c.num_attention_heads,
        kv: c.num_key_value_heads,
        hd: c.head_dim,
        query_block: attention::QUERY_BLOCK,
        attention_scale: c.attention_scale,
        softcap: c.attn_logit_softcap,
        activation: c.activation,
        eps: c.rms_norm_eps,
        segments,
        ropes,
    }
}

/// The embeddings `[ids, d]` of `ids`, scaled where the family does (a quantized embedding decodes
/// those rows only).
fn embed_rows<T: Real>(
    embed: proj::Weight<'_, T>,
    ids: &[u32],
    d: usize,
    scale: Option<f64>,
) -> Result<Vec<T>> {
    let mut x = vec![T::ZERO; ids.len() * d];
    match embed {
        proj::Weight::Dense(embed) => {
            for (row, &id) in x.chunks_mut(d).zip(ids) {
                row.copy_from_slice(&embed[id as usize * d..(id as usize + 1) * d]);
            }
        }
        proj::Weight::Quantized(q) => {
            let mut decoded = vec![0.0f32; ids.len() * d];
            q.matrix
                .decode_picked_rows(ids, &mut decoded)
                .map_err(|e| candle_core::Error::Msg(format!("cpu engine: {e}")))?;
            for (dst, v) in x.iter_mut().zip(decoded) {
                *dst = T::from_f64(f64::from(v));
            }
        }
    }
    if let Some(scale) = scale.map(T::from_f64) {
        x.iter_mut().for_each(|v| *v *= scale);
    }
    Ok(x)
}

/// Runs the engine over a packed batch: the NLL sum of `targets` and, with `scale`, the LoRA gradients of
/// `scale * sum(nll)` in [`LoraModel::trainable`] order.
pub fn run<T: Real>(
    model: &LoraModel,
    batch: &Packed,
    ids: &[u32],
    targets: &Targets,
    scale: Option<f64>,
) -> Result<(f64, Option<Vec<Tensor>>)> {
    with_views::<T, _>(model, |w| run_on(model, w, batch, ids, targets, scale))
}

fn run_on<T: Real>(
    model: &LoraModel,
    w: &Weights<'_, T>,
    batch: &Packed,
    ids: &[u32],
    targets: &Targets,
    scale: Option<f64>,
) -> Result<(f64, Option<Vec<Tensor>>)> {
    let c = &model.config;
    let (d, n) = (c.hidden_size, batch.len());
    let ropes: Vec<RopeTable<T>> = rope_tables(model, &batch.spans());
    let ctx = context(model, n, &batch.segments, &ropes);
    let mut x = embed_rows(w.embed, ids, d, c.embedding_scale)?;
    let mut scratch = Scratch::default();
    let training = scale.is_some();
    let recompute = training && model.recomputes();
    // Per block: its input alone (recompute) or everything its backward reads.
    let (mut inputs, mut saved) = (Vec::new(), Vec::new());
    for b in &w.blocks {
        if recompute {
            inputs.push(x.clone());
        }
        let (out, s) = block::forward(b, &ctx, x, &mut scratch);
        if training && !recompute {
            saved.push(s);
        }
        x = out;
    }
    let (nll, dx) = head::loss(&w.head, &x, &targets.rows, &targets.tokens, scale);
    let Some(mut dx) = dx else {
        return Ok((nll, None));
    };
    drop(x);
    let mut grads: Vec<Vec<Option<LoraGrad<T>>>> = w
        .blocks
        .iter()
        .map(|b| {
            let experts = b.experts.iter().flat_map(|e| e.grads());
            b.projections
                .iter()
                .map(|p| p.grad())
                .chain(experts)
                .collect()
        })
        .collect();
    for (b, g) in w.blocks.iter().zip(&mut grads).rev() {
        let s = match inputs.pop() {
            Some(x) => block::forward(b, &ctx, x, &mut scratch).1,
            None => saved.pop().expect("saved activations of every block"),
        };
        block::backward(b, &ctx, s, &mut dx, g, &mut scratch);
    }
    let mut out = Vec::new();
    let device = model.device();
    for (g, b) in grads.into_iter().zip(&model.blocks) {
        // The slots that hold a gradient are the block's pairs, in the same order.
        for (g, pair) in g.into_iter().flatten().zip(b.lora_pairs()) {
            out.push(Tensor::from_vec(g.a, pair.a.as_tensor().dims(), device)?);
            out.push(Tensor::from_vec(g.b, pair.b.as_tensor().dims(), device)?);
        }
    }
    Ok((nll, Some(out)))
}
