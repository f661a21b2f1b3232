//! Which examples each optimizer step trains on: the reference's steps/epochs semantics, one shuffle per
//! epoch derived from the seed alone (so a resumed run sees the same order), and the split of a step into
//! micro-batches and token-budget passes.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

/// Optimizer steps in one epoch: `ceil(examples / (batch * accumulation))`.
pub fn steps_per_epoch(examples: usize, per_step: usize) -> u64 {
    examples.div_ceil(per_step.max(1)) as u64
}

/// Total optimizer steps: one epoch by default; `epochs` epochs, capped by `steps`; or `steps` alone.
pub fn total_steps(
    examples: usize,
    per_step: usize,
    steps: Option<u64>,
    epochs: Option<u64>,
) -> u64 {
    let spe = steps_per_epoch(examples, per_step);
    match (steps, epochs) {
        (None, None) => spe,
        (Some(s), None) => s,
        (None, Some(e)) => e * spe,
        (Some(s), Some(e)) => (e * spe).min(s),
    }
}

/// The example order of `epoch`: a permutation drawn from `seed` on its own stream per epoch.
pub fn epoch_order(examples: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(epoch + 1);
    let mut order: Vec<usize> = (0..examples).collect();
    order.shuffle(&mut rng);
    order
}

/// The epoch of 0-based optimizer step `step` and its first position in that epoch (no shuffle needed).
pub fn step_position(examples: usize, per_step: usize, step: u64) -> (u64, u64) {
    let spe = steps_per_epoch(examples, per_step);
    (step / spe, (step % spe) * per_step as u64)
}

/// The examples of 0-based optimizer step `step`, with its epoch and its first position in that epoch.
pub fn step_examples(
    examples: usize,
    per_step: usize,
    seed: u64,
    step: u64,
) -> (u64, u64, Vec<usize>) {
    let (epoch, start) = step_position(examples, per_step, step);
    let end = (start as usize + per_step).min(examples);
    let order = epoch_order(examples, seed, epoch);
    (epoch, start, order[start as usize..end].to_vec())
}

/// Splits one micro-batch (indices with their lengths) into passes of at most `budget` tokens, in order;
/// an example longer than the budget gets a pass of its own.
pub fn passes(lengths: &[(usize, usize)], budget: usize) -> Vec<Vec<usize>> {
    let mut out: Vec<Vec<usize>> = Vec::new();
    let mut used = 0;
    for &(index, len) in lengths {
        match out.last_mut() {
            Some(pass) if used + len <= budget => pass.push(index),
            _ => {
                out.push(vec![index]);
                used = 0;
            }
        }
        used += len;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_step_counts() {
        assert_eq!(total_steps(10, 4, None, None), 3);
        assert_eq!(total_steps(10, 4, None, Some(2)), 6);
        assert_eq!(total_steps(10, 4, Some(5), Some(2)), 5);
        assert_eq!(total_steps(10, 4, Some(7), None), 7);
    }

    #[test]
    fn every_epoch_is_a_permutation_and_epochs_differ() {
        let a = epoch_order(50, 0, 0);
        let b = epoch_order(50, 0, 1);
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
        assert_ne!(a, b);
        assert_eq!(a, epoch_order(50, 0, 0));
    }

    #[test]
    fn steps_walk_epochs_and_the_last_step_is_partial() {
        let (epoch, start, idx) = step_examples(10, 4, 0, 2);
        assert_eq!((epoch, start, idx.len()), (0, 8, 2));
        let (epoch, start, _) = step_examples(10, 4, 0, 3);
        assert_eq!((epoch, start), (1, 0));
    }

    #[test]
    fn passes_respect_the_budget() {
        let p = passes(&[(0, 5), (1, 5), (2, 20), (3, 3)], 10);
        assert_eq!(p, vec![vec![0, 1], vec![2], vec![3]]);
    }
}
