//! The output head on the graph: logits of the rows that predict a target (soft-capped where the family
//! does), their negative log-likelihoods a chunk of rows at a time, and evaluation with no graph recorded.

use candle_core::{D, DType, Tensor};

use crate::batch::{LOGIT_CHUNK_ROWS, Packed, Targets};
use crate::error::Result;
use crate::model::LoraModel;

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
            super::layers::softcap(&wide, cap)
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

/// The summed NLL of the targets (an f64 scalar on the device), with no graph recorded (evaluation).
pub(crate) fn evaluate(model: &LoraModel, batch: &Packed, targets: &Targets) -> Result<Tensor> {
    let mut total = Tensor::zeros((), DType::F64, model.device())?;
    let device = model.device();
    let hidden = model.hidden(batch, false)?;
    let rows = Tensor::new(targets.rows.as_slice(), device)?;
    let all_tokens = Tensor::new(targets.tokens.as_slice(), device)?;
    let selected = hidden.index_select(&rows, 0)?;
    let mut start = 0;
    while start < targets.rows.len() {
        let len = LOGIT_CHUNK_ROWS.min(targets.rows.len() - start);
        let tokens = all_tokens.narrow(0, start, len)?;
        let nll = chunk_nll(model, &selected.narrow(0, start, len)?, &tokens)?;
        total = (total + nll.sum_all()?.to_dtype(DType::F64)?)?;
        start += len;
    }
    Ok(total)
}

/// Logits `[rows, vocab]` of the given packed rows, with no graph.
pub(crate) fn logits_at(model: &LoraModel, batch: &Packed, rows: &[u32]) -> Result<Tensor> {
    let hidden = model.hidden(batch, false)?;
    let rows = Tensor::new(rows, model.device())?;
    head_logits(model, &hidden.index_select(&rows, 0)?)
}
