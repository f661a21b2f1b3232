//! The model's LoRA gradients against central finite differences in f64, and that every LoRA tensor
//! receives a gradient (the trap: fused candle ops silently cut the graph).

mod common;

use common::sequences;

use candle_core::{Tensor, Var};
use common::tiny::{tiny_examples, tiny_model};
use dn_train::{DType, Executor, LoraConfig, LoraModel, Sequence, evaluate, forward_backward};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn loss(model: &LoraModel, seqs: &[Sequence<'_>], normaliser: usize) -> f64 {
    evaluate(model, seqs).unwrap().nll_sum().unwrap() / normaliser as f64
}

/// Makes every B non-zero, so that A's gradients are not trivially zero.
fn randomize_b(model: &LoraModel, seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for pair in model.lora_pairs() {
        let dims = pair.b.as_tensor().dims().to_vec();
        let n = dims.iter().product();
        let values: Vec<f64> = (0..n).map(|_| rng.random_range(-0.3..0.3)).collect();
        let values = Tensor::from_vec(values, dims, &candle_core::Device::Cpu).unwrap();
        pair.b
            .set(&values.to_dtype(pair.b.as_tensor().dtype()).unwrap())
            .unwrap();
    }
}

/// The gradient of `var` among `grads` (given in [`LoraModel::trainable`] order).
fn grad_of<'a>(model: &LoraModel, grads: &'a [Tensor], var: &Var) -> &'a Tensor {
    let i = model
        .trainable()
        .iter()
        .position(|v| v.as_tensor().id() == var.as_tensor().id())
        .expect("a trainable tensor");
    &grads[i]
}

fn check_against_finite_differences(tied: bool, executor: Executor) {
    let base = tiny_model(DType::F64, tied, 7);
    let model = LoraModel::with_executor(&base, &LoraConfig::new(2, 4.0), 3, executor).unwrap();
    assert_eq!(model.executor(), executor);
    randomize_b(&model, 11);
    let examples = tiny_examples(3, 5);
    let seqs = sequences(&examples);
    let normaliser = dn_train::count_targets(&seqs);
    let (_, grads) = forward_backward(&model, &seqs, normaliser).unwrap();
    let grads = grads.unwrap();
    let h = 1e-6;
    for pair in model.lora_pairs() {
        for (label, var) in [("A", &pair.a), ("B", &pair.b)] {
            let analytic = grad_of(&model, &grads, var).flatten_all().unwrap();
            let analytic: Vec<f64> = analytic.to_vec1().unwrap();
            let original = var.as_tensor().copy().unwrap();
            let flat: Vec<f64> = original.flatten_all().unwrap().to_vec1().unwrap();
            let mut numeric = Vec::with_capacity(flat.len());
            for i in 0..flat.len() {
                let shifted = |delta: f64| {
                    let mut v = flat.clone();
                    v[i] += delta;
                    set(var, v, original.dims());
                    loss(&model, &seqs, normaliser)
                };
                let d = (shifted(h) - shifted(-h)) / (2.0 * h);
                numeric.push(d);
            }
            set(var, flat, original.dims());
            let diff: f64 = analytic
                .iter()
                .zip(&numeric)
                .map(|(a, n)| (a - n).powi(2))
                .sum::<f64>()
                .sqrt();
            let norm: f64 = numeric.iter().map(|n| n * n).sum::<f64>().sqrt();
            assert!(norm > 0.0, "{} {label}: zero numeric gradient", pair.module);
            let rel = diff / norm;
            assert!(
                rel < 1e-4,
                "{} {label}: relative error {rel:e}",
                pair.module
            );
        }
    }
}

fn set(var: &Var, values: Vec<f64>, dims: &[usize]) {
    var.set(&Tensor::from_vec(values, dims, &candle_core::Device::Cpu).unwrap())
        .unwrap();
}

#[test]
fn lora_gradients_match_finite_differences_untied() {
    check_against_finite_differences(false, Executor::CpuEngine);
}

#[test]
fn lora_gradients_match_finite_differences_tied() {
    check_against_finite_differences(true, Executor::CpuEngine);
}

#[test]
fn candle_graph_gradients_match_finite_differences() {
    check_against_finite_differences(false, Executor::Graph);
}

/// Loss and gradients of one forward/backward in f64 with the given engine and recompute settings.
fn loss_and_grads(executor: Executor, recompute: bool) -> (f64, Vec<Tensor>) {
    let base = tiny_model(DType::F64, true, 5);
    let model = LoraModel::with_executor(&base, &LoraConfig::new(3, 6.0), 2, executor).unwrap();
    randomize_b(&model, 4);
    model.set_recompute(recompute);
    let examples = tiny_examples(4, 9);
    let seqs = sequences(&examples);
    let n = dn_train::count_targets(&seqs);
    let (loss, grads) = forward_backward(&model, &seqs, n).unwrap();
    (loss.nll_sum().unwrap(), grads.unwrap())
}

fn assert_same(label: &str, a: &(f64, Vec<Tensor>), b: &(f64, Vec<Tensor>)) {
    let rel = (a.0 - b.0).abs() / b.0;
    assert!(rel < 1e-12, "{label}: loss relative difference {rel:e}");
    assert_eq!(a.1.len(), b.1.len());
    for (x, y) in a.1.iter().zip(&b.1) {
        let norm = |t: &Tensor| t.sqr().unwrap().sum_all().unwrap().sqrt().unwrap();
        let diff = norm(&(x - y).unwrap()).to_scalar::<f64>().unwrap();
        let rel = diff / norm(y).to_scalar::<f64>().unwrap();
        assert!(rel < 1e-10, "{label}: gradient relative difference {rel:e}");
    }
}

/// The CPU engine and the candle graph (the CUDA path) agree on the loss and every gradient in f64, and
/// layer-by-layer recompute changes neither.
#[test]
fn cpu_engine_graph_and_recompute_agree() {
    let engine = loss_and_grads(Executor::CpuEngine, false);
    assert_same("graph", &loss_and_grads(Executor::Graph, false), &engine);
    assert_same(
        "engine with recompute",
        &loss_and_grads(Executor::CpuEngine, true),
        &engine,
    );
    assert_same(
        "graph with recompute",
        &loss_and_grads(Executor::Graph, true),
        &engine,
    );
}

/// The graph's rope rows come from tables kept per model and grown when a longer example comes: after a
/// short batch (a 256-row table), a batch of 600 tokens still computes the CPU engine's loss in f64.
#[test]
fn graph_rope_tables_grow_with_the_longest_example() {
    let base = tiny_model(DType::F64, true, 5);
    let build = |executor| {
        let model = LoraModel::with_executor(&base, &LoraConfig::new(3, 6.0), 2, executor).unwrap();
        randomize_b(&model, 4);
        model
    };
    let (model, graph_model) = (build(Executor::CpuEngine), build(Executor::Graph));
    let long: Vec<dn_train::TrainExample> = [600, 37]
        .iter()
        .map(|&len| dn_train::TrainExample {
            input_ids: (0..len).map(|i| (i * 7 % 40) as u32).collect(),
            loss_mask: (0..len).map(|i| u8::from(i % 3 == 0)).collect(),
        })
        .collect();
    let (short, long) = (tiny_examples(4, 9), long);
    let n = dn_train::count_targets(&sequences(&long));
    let engine = loss(&model, &sequences(&long), n);
    loss(&graph_model, &sequences(&short), 1);
    let graph = loss(&graph_model, &sequences(&long), n);
    let rel = (graph - engine).abs() / engine;
    assert!(rel < 1e-12, "loss relative difference {rel:e}");
}

#[test]
fn every_lora_tensor_gets_a_nonzero_gradient_after_one_step() {
    let base = tiny_model(DType::F32, false, 1);
    let model = LoraModel::new(&base, &LoraConfig::new(4, 8.0), 0).unwrap();
    let examples = tiny_examples(4, 2);
    let dir = tempfile::tempdir().unwrap();
    let trainer = dn_train::Trainer {
        model: &model,
        options: dn_train::TrainOptions {
            batch_size: 4,
            steps: Some(1),
            learning_rate: 1e-2,
            ..Default::default()
        },
        checkpoint_dir: dir.path().to_path_buf(),
        base_model_name: "tiny".into(),
    };
    trainer
        .run(&examples, &[], None, &mut |_| dn_train::Control::Continue)
        .unwrap();
    let seqs = sequences(&examples);
    let (_, grads) = forward_backward(&model, &seqs, dn_train::count_targets(&seqs)).unwrap();
    let grads = grads.unwrap();
    assert_eq!(model.trainable().len(), 2 * 7 * 2);
    for pair in model.lora_pairs() {
        for (label, var) in [("A", &pair.a), ("B", &pair.b)] {
            let g = grad_of(&model, &grads, var);
            let max = g
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(max > 0.0, "{} {label}: zero gradient", pair.module);
        }
    }
}

/// The CUDA precision recipe, checked on the CPU: bf16 base weights and activations, f32 LoRA tensors
/// (and so f32 gradients and optimizer state), norms and softmax in f32; close to the all-f32 loss.
#[test]
fn a_bf16_base_trains_f32_lora_tensors_close_to_f32() {
    let examples = tiny_examples(3, 5);
    let seqs = sequences(&examples);
    let n = dn_train::count_targets(&seqs);
    let run = |dtype: DType| {
        let base = tiny_model(dtype, false, 7);
        let model = LoraModel::new(&base, &LoraConfig::new(2, 4.0), 3).unwrap();
        randomize_b(&model, 11);
        let (loss, grads) = forward_backward(&model, &seqs, n).unwrap();
        let grads = grads.unwrap();
        for var in model.trainable() {
            assert_eq!(var.as_tensor().dtype(), DType::F32);
            assert_eq!(grad_of(&model, &grads, var).dtype(), DType::F32);
        }
        loss.nll_sum().unwrap() / n as f64
    };
    let (full, half) = (run(DType::F32), run(DType::BF16));
    assert!(
        ((full - half) / full).abs() < 2e-2,
        "f32 {full} vs bf16 {half}"
    );
}
