//! Masked next-token cross-entropy over supervised positions only. Logits are computed only for the
//! positions that predict a supervised token, a chunk of rows at a time; in training each chunk's
//! gradient is taken at once and the chunk's logits freed (two-phase backward), so the vocabulary-sized
//! logits never exist for the whole batch.

use candle_core::{D, DType, Tensor};

use crate::error::Result;
use crate::model::{LoraModel, Packed};

/// Rows of logits computed at once.
pub const LOGIT_CHUNK_ROWS: usize = 512;

/// One example to train or evaluate on.
pub struct Sequence<'a> {
    pub input_ids: &'a [u32],
    /// `loss_mask[i] == 1`: token `i` is a target.
    pub loss_mask: &'a [u8],
}

/// The packed rows that predict a supervised token, and those tokens.
pub struct Targets {
    pub rows: Vec<u32>,
    pub tokens: Vec<u32>,
}

/// Token `t` of an example is predicted from row `t - 1`; a supervised first token has no predictor.
pub fn targets(sequences: &[Sequence<'_>]) -> Targets {
    let (mut rows, mut tokens) = (Vec::new(), Vec::new());
    let mut start = 0u32;
    for s in sequences {
        for t in 1..s.input_ids.len() {
            if s.loss_mask[t] == 1 {
                rows.push(start + t as u32 - 1);
                tokens.push(s.input_ids[t]);
            }
        }
        start += s.input_ids.len() as u32;
    }
    Targets { rows, tokens }
}

/// The number of supervised tokens that have a predictor (the loss normaliser's share of these).
pub fn count_targets(sequences: &[Sequence<'_>]) -> usize {
    sequences
        .iter()
        .map(|s| s.loss_mask.iter().skip(1).filter(|m| **m == 1).count())
        .sum()
}

/// Logits of `hidden` rows as the model outputs them (soft-capped where the family does).
pub(crate) fn head_logits(model: &LoraModel, hidden: &Tensor) -> Result<Tensor> {
    let logits = model.lm_head().forward(hidden)?;
    match model.config.final_logit_softcap {
        Some(cap) => {
            let wide = if logits.dtype() == DType::F64 {
                logits
            } else {
                logits.to_dtype(DType::F32)?
            };
            crate::model::softcap(&wide, cap)
        }
        None => Ok(logits),
    }
}

/// Negative log-likelihood of each row's target: `logsumexp(logits) - logits[target]`, in f32 or f64.
pub(crate) fn chunk_nll(model: &LoraModel, hidden: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let logits = head_logits(model, hidden)?;
    let logits = if logits.dtype() == DType::F64 {
        logits
    } else {
        logits.to_dtype(DType::F32)?
    };
    let max = logits.max_keepdim(D::Minus1)?.detach();
    let shifted = logits.broadcast_sub(&max)?;
    let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    let picked = shifted.gather(&targets.unsqueeze(1)?, 1)?;
    Ok((lse - picked)?.squeeze(1)?)
}

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
    if model.uses_cpu_engine() {
        let (nll, grads) = on_cpu_engine(model, sequences, &batch, &targets, Some(scale))?;
        loss.nll = Tensor::new(nll, model.device())?;
        return Ok((loss, grads));
    }
    let (nll, grads) = crate::graph::forward_backward(model, &batch, &targets, scale)?;
    loss.nll = nll;
    Ok((loss, Some(grads)))
}

/// The summed NLL of `sequences` with no graph recorded (evaluation).
pub fn evaluate(model: &LoraModel, sequences: &[Sequence<'_>]) -> Result<BatchLoss> {
    let (batch, targets) = pack(model, sequences)?;
    let mut loss = BatchLoss::empty(model, targets.rows.len(), batch.len())?;
    if targets.rows.is_empty() {
        return Ok(loss);
    }
    if model.uses_cpu_engine() {
        let nll = on_cpu_engine(model, sequences, &batch, &targets, None)?.0;
        loss.nll = Tensor::new(nll, model.device())?;
        return Ok(loss);
    }
    let device = model.device();
    let hidden = model.hidden(&batch, false)?;
    let rows = Tensor::new(targets.rows.as_slice(), device)?;
    let all_tokens = Tensor::new(targets.tokens.as_slice(), device)?;
    let selected = hidden.index_select(&rows, 0)?;
    let mut start = 0;
    while start < targets.rows.len() {
        let len = LOGIT_CHUNK_ROWS.min(targets.rows.len() - start);
        let tokens = all_tokens.narrow(0, start, len)?;
        let nll = chunk_nll(model, &selected.narrow(0, start, len)?, &tokens)?;
        loss.nll = (loss.nll + nll.sum_all()?.to_dtype(DType::F64)?)?;
        start += len;
    }
    Ok(loss)
}

/// Logits `[rows, vocab]` of the given packed rows, with no graph (parity checks and inspection).
pub fn logits_at(model: &LoraModel, sequences: &[Sequence<'_>], rows: &[u32]) -> Result<Tensor> {
    let (batch, _) = pack(model, sequences)?;
    let hidden = model.hidden(&batch, false)?;
    let rows = Tensor::new(rows, model.device())?;
    head_logits(model, &hidden.index_select(&rows, 0)?)
}
