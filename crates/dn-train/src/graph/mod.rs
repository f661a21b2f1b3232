//! The graph executor: the model as a candle graph (CUDA, half precision, and the CPU for a model built
//! with `Executor::Graph`) - each block's forward (`layers`), blocked attention, the output head and its chunked
//! loss (`head`), and training's backward here:
//! the two-phase chunked loss backward, with or without layer-by-layer recompute. With recompute the
//! forward records no graph and keeps each block's input; the backward then redoes one block at a time
//! with its graph and pushes the gradient through it, so at most one block's activations are alive.
//!
//! It works over 2-D `[tokens, hidden]` packed batches (positions restart per example, attention per example,
//! query heads grouped per key/value head without copying K/V), built only from ops that record a backward:
//! candle's fused RMSNorm, rope and softmax cut the graph, so ours are primitives or custom ops with a
//! hand-written backward (`norm` on the CPU, `blocked_attention` everywhere). `blocked_attention` is causal
//! attention by blocks of query rows against the keys each block sees (windows, soft-caps), keeping the
//! softmax's log-sum-exp; its backward recomputes each block's probabilities from it (flash attention's
//! scheme from candle ops with CUDA kernels), so no `[len, len]` tensor is kept and training memory grows
//! linearly with the length (`tests/graph_memory.rs` measures it); the masks of every block are views of one
//! band per window built once per batch; rope's cos and sin rows are gathered by position from tables kept on
//! the device per rope setting. `frozen` (beside `model`, whose projections use it) is a custom op for `x @
//! W^T` whose backward returns only the input gradient. The projections that read one input share one cast of
//! it to the adapters' f32 (`ProjectionInput`). Recompute is on by default on CUDA. Nothing is read back to
//! the host inside a step but the loss and the gradient norm, together, once: the chunk losses add up on the
//! device and `clip_grad_norm` computes the norm and the clip coefficient there.

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};

use crate::batch::{LOGIT_CHUNK_ROWS, Packed, Targets};
use crate::error::Result;
use crate::model::LoraModel;
use head::chunk_nll;
pub(crate) use head::{evaluate, logits_at};

mod blocked_attention;
mod experts;
mod head;
mod layers;

/// The summed NLL of the targets (an f64 scalar on the device: not read here), and the gradient of
/// `scale * nll` with respect to `hidden` (the final norm's output; only its target rows are non-zero),
/// a chunk of logits at a time.
fn head(
    model: &LoraModel,
    hidden: &Tensor,
    targets: &Targets,
    scale: f64,
) -> Result<(Tensor, Tensor)> {
    let device = model.device();
    let rows = Tensor::new(targets.rows.as_slice(), device)?;
    let all_tokens = Tensor::new(targets.tokens.as_slice(), device)?;
    let selected = hidden.index_select(&rows, 0)?.detach();
    let mut nll_sum = Tensor::zeros((), DType::F64, device)?;
    let mut grads = Vec::new();
    let mut start = 0;
    while start < targets.rows.len() {
        let len = LOGIT_CHUNK_ROWS.min(targets.rows.len() - start);
        let leaf = Var::from_tensor(&selected.narrow(0, start, len)?)?;
        let tokens = all_tokens.narrow(0, start, len)?;
        let nll = chunk_nll(model, leaf.as_tensor(), &tokens)?.sum_all()?;
        nll_sum = (nll_sum + nll.detach().to_dtype(DType::F64)?)?;
        let chunk_grads = (nll * scale)?.backward()?;
        let grad = chunk_grads
            .get(leaf.as_tensor())
            .cloned()
            .unwrap_or(leaf.as_tensor().zeros_like()?);
        grads.push(grad.to_dtype(selected.dtype())?);
        start += len;
    }
    let grad = Tensor::cat(&grads, 0)?;
    let full = hidden.zeros_like()?.index_add(&rows, &grad, 0)?;
    Ok((nll_sum, full))
}

/// Backward of `sum(output * grad)`: pushes `grad` through the graph that produced `output`.
fn push_through(output: &Tensor, grad: &Tensor) -> Result<GradStore> {
    Ok((output * grad.detach())?.sum_all()?.backward()?)
}

/// Adds each trainable tensor's gradient found in `store` to its slot.
fn collect(model: &LoraModel, store: &GradStore, slots: &mut [Option<Tensor>]) -> Result<()> {
    for (slot, var) in slots.iter_mut().zip(model.trainable()) {
        if let Some(g) = store.get(var.as_tensor()) {
            *slot = Some(match slot.take() {
                Some(acc) => (acc + g)?,
                None => g.clone(),
            });
        }
    }
    Ok(())
}

/// The NLL sum (an f64 scalar on the device) and the LoRA gradients of `scale * nll`, in
/// [`LoraModel::trainable`] order. Nothing is read back to the host.
pub fn forward_backward(
    model: &LoraModel,
    batch: &Packed,
    targets: &Targets,
    scale: f64,
) -> Result<(Tensor, Vec<Tensor>)> {
    let mut slots: Vec<Option<Tensor>> = vec![None; model.trainable().len()];
    let ctx = model.batch_context(batch)?;
    let mut x = model.embed(batch)?;
    let nll = if model.recomputes() {
        let mut inputs = Vec::with_capacity(model.num_blocks());
        for i in 0..model.num_blocks() {
            inputs.push(x.clone());
            x = model.block_forward(i, &x, &ctx, batch, false)?;
        }
        let leaf = Var::from_tensor(&x)?;
        let hidden = model.final_norm(leaf.as_tensor())?;
        let (nll, grad) = head(model, &hidden.detach(), targets, scale)?;
        let mut grad = push_through(&hidden, &grad)?
            .get(leaf.as_tensor())
            .cloned()
            .unwrap_or(x.zeros_like()?);
        for (i, input) in inputs.into_iter().enumerate().rev() {
            let leaf = Var::from_tensor(&input)?;
            let output = model.block_forward(i, leaf.as_tensor(), &ctx, batch, true)?;
            let store = push_through(&output, &grad)?;
            collect(model, &store, &mut slots)?;
            grad = match store.get(leaf.as_tensor()) {
                Some(g) => g.clone(),
                None => grad.zeros_like()?,
            };
        }
        nll
    } else {
        for i in 0..model.num_blocks() {
            x = model.block_forward(i, &x, &ctx, batch, true)?;
        }
        let hidden = model.final_norm(&x)?;
        let (nll, grad) = head(model, &hidden.detach(), targets, scale)?;
        collect(model, &push_through(&hidden, &grad)?, &mut slots)?;
        nll
    };
    let grads = slots
        .into_iter()
        .zip(model.trainable())
        .map(|(g, v)| g.map_or_else(|| v.as_tensor().zeros_like(), Ok))
        .collect::<candle_core::Result<Vec<_>>>()?;
    Ok((nll, grads))
}
