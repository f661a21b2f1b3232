//! Every family (the mixtures of experts included, with and without their routers adapted) in f64: the CPU engine, the candle graph (its attention in blocks of query rows of any
//! size) and layer-by-layer recompute compute the same loss and gradients, and those gradients are the loss's derivatives (central finite differences along a
//! random direction per LoRA tensor).

mod common;

use common::sequences;

use candle_core::{Device, Tensor};
use common::families::{cases, model_with, reference_for, relative_error};
use dn_train::{DType, Executor, LoraModel, Sequence, count_targets, evaluate, forward_backward};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn loss_and_grads(model: &LoraModel, seqs: &[Sequence<'_>]) -> (f64, Vec<Tensor>) {
    let n = count_targets(seqs);
    let (loss, grads) = forward_backward(model, seqs, n).unwrap();
    (loss.nll_sum().unwrap() / n as f64, grads.unwrap())
}

#[test]
fn engine_graph_and_recompute_agree_in_f64() {
    for (family, targets) in cases() {
        let r = reference_for(family, targets);
        let seqs = sequences(&r.examples);
        let model = model_with(family, DType::F64, Executor::CpuEngine, targets);
        let engine = loss_and_grads(&model, &seqs);
        // Attention blocks of 3 and 5 query rows: the examples (13, 9, 6 tokens) span several blocks,
        // and the windows (4 to 7) cut into earlier ones.
        for (executor, recompute, block) in [
            (Executor::Graph, false, 0),
            (Executor::CpuEngine, true, 0),
            (Executor::Graph, true, 0),
            (Executor::Graph, false, 3),
            (Executor::Graph, true, 5),
        ] {
            let model = model_with(family, DType::F64, executor, targets);
            model.set_recompute(recompute);
            model.set_attention_block_rows(block);
            let other = loss_and_grads(&model, &seqs);
            let label = format!(
                "{family} ({targets:?}, {executor:?}, recompute {recompute}, attention block {block})"
            );
            let rel = (other.0 - engine.0).abs() / engine.0;
            assert!(rel < 1e-12, "{label}: loss differs by {rel:e}");
            for (a, b) in other.1.iter().zip(&engine.1) {
                let rel = relative_error(a, b);
                assert!(rel < 1e-10, "{label}: gradient differs by {rel:e}");
            }
        }
    }
}

#[test]
fn gradients_are_the_derivatives_of_the_loss() {
    for (family, targets) in cases() {
        let r = reference_for(family, targets);
        let seqs = sequences(&r.examples);
        let model = model_with(family, DType::F64, Executor::CpuEngine, targets);
        let n = count_targets(&seqs) as f64;
        let (_, grads) = loss_and_grads(&model, &seqs);
        let mut rng = ChaCha8Rng::seed_from_u64(17);
        let h = 1e-5;
        for (var, grad) in model.trainable().into_iter().zip(&grads) {
            let original = var.as_tensor().copy().unwrap();
            let dims = original.dims().to_vec();
            let count: usize = dims.iter().product();
            let direction: Vec<f64> = (0..count).map(|_| rng.random_range(-1.0..1.0)).collect();
            let direction = Tensor::from_vec(direction, dims.as_slice(), &Device::Cpu).unwrap();
            let at = |step: f64| {
                var.set(&(&original + (&direction * step).unwrap()).unwrap())
                    .unwrap();
                evaluate(&model, &seqs).unwrap().nll_sum().unwrap() / n
            };
            let numeric = (at(h) - at(-h)) / (2.0 * h);
            var.set(&original).unwrap();
            let analytic = (grad * &direction)
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f64>()
                .unwrap();
            let rel = (numeric - analytic).abs() / numeric.abs().max(1e-12);
            assert!(
                rel < 1e-5,
                "{family} ({targets:?}): directional derivative {analytic} vs finite difference {numeric}"
            );
        }
    }
}
