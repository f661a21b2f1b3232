//! Masked next-token cross-entropy over supervised positions only, and the one place that picks the
//! executor: the CPU engine (`cpu`) or the candle graph (`graph`), as the model was built for. Logits are
//! computed only for the positions that predict a supervised token, a chunk of rows at a time; in training
//! each chunk's gradient is taken at once and the chunk's logits freed (two-phase backward), so the
//! vocabulary-sized logits never exist for the whole batch.

use candle_core::{DType, Tensor};

use crate::batch::Packed;
pub use crate::batch::{Sequence, Targets, count_targets, targets};
use crate::error::Result;
use crate::model::{Executor, LoraModel};

/// What one forward(+backward) over a packed batch produced.
pub struct BatchLoss {
    /// Sum of the targets' negative log-likelihoods: an f64 scalar on the model's device, left there so
    /// that the passes of a step add up without a host synchronisation.
    pub nll: Tensor,
    pub targets: usize,
    pub tokens: usize,
}

impl BatchLoss {
    fn empty(model: &LoraModel, targets: usize, tokens: usize) -> Result<Self> {
        Ok(BatchLoss {
            nll: Tensor::zeros((), DType::F64, model.device())?,
            targets,
            tokens,
        })
    }

    /// The NLL sum read back to the host (a synchronisation on a GPU).
    pub fn nll_sum(&self) -> Result<f64> {
        Ok(self.nll.to_scalar::<f64>()?)
    }
}

fn pack<'a>(model: &LoraModel, sequences: &[Sequence<'a>]) -> Result<(Packed, Targets)> {
    let ids: Vec<&[u32]> = sequences.iter().map(|s| s.input_ids).collect();
    Ok((Packed::new(&ids, model.device())?, targets(sequences)))
}

/// The CPU engine's NLL sum (and gradients of `scale * nll`) in the model's dtype.
fn on_cpu_engine(
    model: &LoraModel,
    sequences: &[Sequence<'_>],
    batch: &Packed,
    targets: &Targets,
    scale: Option<f64>,
) -> Result<(f64, Option<Vec<Tensor>>)> {
    let ids: Vec<u32> = sequences
        .iter()
        .flat_map(|s| s.input_ids.iter().copied())
        .collect();
    match model.dtype() {
        DType::F64 => crate::cpu::run::<f64>(model, batch, &ids, targets, scale),
        _ => crate::cpu::run::<f32>(model, batch, &ids, targets, scale),
    }
}

/// Forward and backward of `sum(nll) / normaliser` over `sequences`, packed. Returns the loss parts and
/// the gradient of every LoRA tensor in [`LoraModel::trainable`] order (add them up across the passes
/// of one optimizer step).
pub fn forward_backward(
    model: &LoraModel,
    sequences: &[Sequence<'_>],
    normaliser: usize,
) -> Result<(BatchLoss, Option<Vec<Tensor>>)> {
    let (batch, targets) = pack(model, sequences)?;
    let mut loss = BatchLoss::empty(model, targets.rows.len(), batch.len())?;
    if targets.rows.is_empty() {
        return Ok((loss, None));
    }
    let scale = 1.0 / normaliser as f64;
    let grads = match model.executor() {
        Executor::CpuEngine => {
            let (nll, grads) = on_cpu_engine(model, sequences, &batch, &targets, Some(scale))?;
            loss.nll = Tensor::new(nll, model.device())?;
            grads
        }
        Executor::Graph => {
            let (nll, grads) = crate::graph::forward_backward(model, &batch, &targets, scale)?;
            loss.nll = nll;
            Some(grads)
        }
    };
    Ok((loss, grads))
}

/// The summed NLL of `sequences` with no graph recorded (evaluation).
pub fn evaluate(model: &LoraModel, sequences: &[Sequence<'_>]) -> Result<BatchLoss> {
    let (batch, targets) = pack(model, sequences)?;
    let mut loss = BatchLoss::empty(model, targets.rows.len(), batch.len())?;
    if targets.rows.is_empty() {
        return Ok(loss);
    }
    loss.nll = match model.executor() {
        Executor::CpuEngine => {
            let nll = on_cpu_engine(model, sequences, &batch, &targets, None)?.0;
            Tensor::new(nll, model.device())?
        }
        Executor::Graph => crate::graph::evaluate(model, &batch, &targets)?,
    };
    Ok(loss)
}

/// Logits `[rows, vocab]` of the given packed rows, with no graph (parity checks and inspection).
pub fn logits_at(model: &LoraModel, sequences: &[Sequence<'_>], rows: &[u32]) -> Result<Tensor> {
    let (batch, _) = pack(model, sequences)?;
    crate::graph::logits_at(model, &batch, rows)
}
