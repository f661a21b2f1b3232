//! Mixture-of-experts routing as transformers computes it, shared by both executors: each token's top-k
//! experts by router probability (softmax over all experts), their weights (renormalised when the model
//! does), and the token slots grouped by expert so each expert runs one matrix product over its tokens.

use dn_arch::Experts;

/// A batch's routing.
pub(crate) struct Routing {
    pub top_k: usize,
    /// Slot `t * top_k + j`: token `t`'s `j`-th expert, by decreasing probability.
    pub experts: Vec<usize>,
    /// The slot's weight (the probability, renormalised over the token's top-k when the model does).
    pub weights: Vec<f64>,
    /// Slots grouped by expert: expert `e`'s are `order[offsets[e]..offsets[e + 1]]`, by token.
    pub order: Vec<usize>,
    pub offsets: Vec<usize>,
}

impl Routing {
    /// Routes the tokens whose router probabilities are the rows of `probs [n, experts]`.
    pub fn new(probs: &[f64], spec: &Experts) -> Self {
        let (count, k) = (spec.count, spec.top_k);
        let n = probs.len() / count;
        let mut experts = Vec::with_capacity(n * k);
        let mut weights = Vec::with_capacity(n * k);
        let mut ranked: Vec<usize> = Vec::with_capacity(count);
        for row in probs.chunks(count) {
            ranked.clear();
            ranked.extend(0..count);
            // Largest first; ties to the lower index (stable sort).
            ranked.sort_by(|a, b| row[*b].total_cmp(&row[*a]));
            let top = &ranked[..k];
            let sum: f64 = top.iter().map(|e| row[*e]).sum();
            for &e in top {
                experts.push(e);
                weights.push(if spec.normalize_top_k {
                    row[e] / sum
                } else {
                    row[e]
                });
            }
        }
        let mut offsets = vec![0; count + 1];
        for &e in &experts {
            offsets[e + 1] += 1;
        }
        for e in 0..count {
            offsets[e + 1] += offsets[e];
        }
        let mut next = offsets.clone();
        let mut order = vec![0; experts.len()];
        for (slot, &e) in experts.iter().enumerate() {
            order[next[e]] = slot;
            next[e] += 1;
        }
        Routing {
            top_k: k,
            experts,
            weights,
            order,
            offsets,
        }
    }

    /// Expert `e`'s slots.
    pub fn slots(&self, e: usize) -> &[usize] {
        &self.order[self.offsets[e]..self.offsets[e + 1]]
    }

    /// Tokens per expert.
    pub fn load(&self) -> Vec<usize> {
        self.offsets.windows(2).map(|w| w[1] - w[0]).collect()
    }
}

/// `softmax(logits)` per row of `[n, experts]`, in f64.
pub(crate) fn softmax_rows(logits: &[f64], count: usize) -> Vec<f64> {
    let mut out = logits.to_vec();
    for row in out.chunks_mut(count) {
        let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let mut sum = 0.0;
        for v in row.iter_mut() {
            *v = (*v - max).exp();
            sum += *v;
        }
        row.iter_mut().for_each(|v| *v /= sum);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_renormalised_and_grouped_by_expert() {
        let spec = Experts {
            count: 3,
            top_k: 2,
            intermediate_size: 1,
            normalize_top_k: true,
            shared_expert: None,
            router_bias: false,
            biases: false,
            clamped_swiglu: None,
            interleaved: false,
        };
        let probs = [0.5, 0.3, 0.2, 0.1, 0.2, 0.7];
        let r = Routing::new(&probs, &spec);
        assert_eq!(r.experts, [0, 1, 2, 1]);
        assert!((r.weights[0] - 0.625).abs() < 1e-12 && (r.weights[3] - 2.0 / 9.0).abs() < 1e-12);
        assert_eq!(r.slots(0), [0]);
        assert_eq!(r.slots(1), [1, 3]);
        assert_eq!(r.slots(2), [2]);
        assert_eq!(r.load(), [1, 2, 1]);
    }
}
