//! What both executors take: examples packed end to end ([`Packed`]), and the rows that predict a
//! supervised token ([`Targets`]). Shared by the CPU engine (`cpu`) and the graph (`graph`), which import
//! nothing from each other; `loss` picks one of them.

use candle_core::{Device, Tensor};

use crate::error::Result;

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

/// Several examples packed into one sequence.
pub struct Packed {
    /// `[tokens]` u32.
    pub ids: Tensor,
    /// Position of each token within its own example.
    pub positions: Vec<u32>,
    /// `(start, len)` of each example.
    pub segments: Vec<(usize, usize)>,
}

impl Packed {
    pub fn new(examples: &[&[u32]], device: &Device) -> Result<Self> {
        let mut ids = Vec::new();
        let mut positions = Vec::new();
        let mut segments = Vec::new();
        for tokens in examples {
            segments.push((ids.len(), tokens.len()));
            ids.extend_from_slice(tokens);
            positions.extend(0..tokens.len() as u32);
        }
        let n = ids.len();
        Ok(Packed {
            ids: Tensor::from_vec(ids, n, device)?,
            positions,
            segments,
        })
    }

    /// Each example as a span of rope rows `(first position, rows, length)`.
    pub(crate) fn spans(&self) -> Vec<(usize, usize, usize)> {
        self.segments
            .iter()
            .map(|&(start, len)| (self.positions[start] as usize, len, len))
            .collect()
    }

    pub fn len(&self) -> usize {
        self.positions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.positions.is_empty()
    }
}
