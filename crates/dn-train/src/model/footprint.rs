//! What the frozen base occupies in memory: the weights kept quantized (their formats and stored
//! bytes) and everything held dense, for the job log and the memory check.

use candle_core::Tensor;

use super::LoraModel;
use crate::frozen::FrozenBase;

/// The base's memory, as held.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BaseMemory {
    /// The quantized weights' formats (`Q4_1`, `nf4`, ...), joined with `+`; `None` when all dense.
    pub quantization: Option<String>,
    /// Weights kept quantized (projections, the embedding, an untied head), and their bytes.
    pub quantized_weights: usize,
    pub quantized_bytes: u64,
    /// Every dense weight's bytes (embedding, head, norms, dense projections, experts).
    pub dense_bytes: u64,
}

fn bytes(t: &Tensor) -> u64 {
    (t.elem_count() * t.dtype().size_in_bytes()) as u64
}

impl LoraModel {
    /// The base's memory as this model holds it.
    pub fn base_memory(&self) -> BaseMemory {
        let mut m = BaseMemory::default();
        let mut formats: Vec<&str> = Vec::new();
        let mut dense = vec![&self.norm];
        let mut frozen: Vec<&FrozenBase> = vec![&self.embed];
        if !self.config.tie_word_embeddings {
            frozen.push(&self.lm_head);
        }
        for b in &self.blocks {
            dense.push(&b.input_norm);
            dense.extend(b.norms().into_iter().flatten());
            dense.extend(b.sinks.iter());
            for l in &b.linears {
                dense.extend(l.bias.iter());
                frozen.push(&l.base);
            }
            if let Some(e) = &b.experts {
                dense.push(e.router.weight());
                for fused in [&e.gate_up, &e.down] {
                    match fused.quantized() {
                        Some(q) => {
                            m.quantized_weights += 1;
                            m.quantized_bytes += q.stored_bytes() as u64;
                            formats.push(q.format());
                        }
                        None => dense.extend(fused.dense()),
                    }
                }
                dense.extend(e.biases.iter().flatten());
                if let Some(s) = &e.shared {
                    dense.extend([
                        s.gate.weight(),
                        s.up.weight(),
                        s.down.weight(),
                        s.scale.weight(),
                    ]);
                }
            }
        }
        for weight in frozen {
            match weight {
                FrozenBase::Dense(f) => dense.push(f.weight()),
                FrozenBase::Quantized(q) => {
                    m.quantized_weights += 1;
                    m.quantized_bytes += q.matrix.stored_bytes() as u64;
                    formats.push(q.matrix.format());
                }
            }
        }
        m.dense_bytes = dense.into_iter().map(bytes).sum();
        formats.sort_unstable();
        formats.dedup();
        m.quantization = (!formats.is_empty()).then(|| formats.join("+"));
        m
    }
}
