//! The trainer against PyTorch on the real model: SmolLM2-135M-Instruct, a committed batch, LoRA r8 with a
//! closed-form A and B = 0, three AdamW steps; step losses and logits after the last step must match
//! transformers + PEFT (scripts/reference/train_parity.py wrote the fixture).

mod common;

use candle_core::Tensor;
use dn_train::{
    BaseModel, Control, DType, Device, LoraConfig, LoraModel, TrainExample, TrainOptions, Trainer,
    logits_at,
};
use serde_json::Value;

fn fixture() -> Value {
    let text = include_str!("fixtures/smollm2_train_parity.json");
    serde_json::from_str(text).unwrap()
}

/// The reference's A: `sin(0.7 * k + 1.3 * ordinal) / sqrt(cols)`, ordinal = layer * 7 + target index.
fn set_reference_init(model: &LoraModel) {
    for (ordinal, pair) in model.lora_pairs().into_iter().enumerate() {
        let (rows, cols) = pair.a.as_tensor().dims2().unwrap();
        let bound = 1.0 / (cols as f64).sqrt();
        let values: Vec<f32> = (0..rows * cols)
            .map(|k| ((0.7 * k as f64 + 1.3 * ordinal as f64).sin() * bound) as f32)
            .collect();
        pair.a
            .set(&Tensor::from_vec(values, (rows, cols), &Device::Cpu).unwrap())
            .unwrap();
    }
}

#[test]
fn three_steps_match_transformers_and_peft() {
    let Some(gguf) = common::test_model() else {
        return;
    };
    let reference = fixture();
    let examples: Vec<TrainExample> = reference["examples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| TrainExample {
            input_ids: serde_json::from_value(e["input_ids"].clone()).unwrap(),
            loss_mask: serde_json::from_value(e["loss_mask"].clone()).unwrap(),
        })
        .collect();
    let base = BaseModel::load(&gguf, DType::F32, &Device::Cpu).unwrap();
    let model = LoraModel::new(&base, &LoraConfig::new(8, 16.0), 0).unwrap();
    set_reference_init(&model);
    let dir = tempfile::tempdir().unwrap();
    let trainer = Trainer {
        model: &model,
        options: TrainOptions {
            learning_rate: 1e-3,
            batch_size: examples.len(),
            steps: Some(3),
            checkpoint_interval: 0,
            ..Default::default()
        },
        checkpoint_dir: dir.path().to_path_buf(),
        base_model_name: "smollm2".into(),
    };
    let summary = trainer
        .run(&examples, &[], None, &mut |_| Control::Continue)
        .unwrap();
    let expected: Vec<f64> = serde_json::from_value(reference["losses"].clone()).unwrap();
    for (record, want) in summary.history.iter().zip(&expected) {
        let rel = (record.loss - want).abs() / want.abs();
        println!(
            "step {}: dn {:.6} torch {:.6} rel {rel:.2e}",
            record.step, record.loss, want
        );
        let tolerance = if record.step == 1 { 1e-4 } else { 1e-3 };
        assert!(
            rel < tolerance,
            "step {}: {} vs {want}",
            record.step,
            record.loss
        );
    }
    assert_eq!(
        summary.history[0].num_supervised_tokens as u64,
        reference["normaliser"].as_u64().unwrap()
    );

    let rows: Vec<u32> = serde_json::from_value(reference["logit_rows"].clone()).unwrap();
    let stride = reference["logit_stride"].as_u64().unwrap() as usize;
    let sequences = common::sequences(&examples);
    let logits: Vec<Vec<f32>> = logits_at(&model, &sequences, &rows)
        .unwrap()
        .to_vec2()
        .unwrap();
    let want: Vec<Vec<f64>> = serde_json::from_value(reference["logits"].clone()).unwrap();
    let (mut max_diff, mut max_abs) = (0.0f64, 0.0f64);
    for (row, want_row) in logits.iter().zip(&want) {
        let sampled: Vec<f64> = row.iter().step_by(stride).map(|v| *v as f64).collect();
        assert_eq!(sampled.len(), want_row.len());
        for (a, b) in sampled.iter().zip(want_row) {
            max_diff = max_diff.max((a - b).abs());
            max_abs = max_abs.max(b.abs());
        }
    }
    let rel = max_diff / max_abs;
    println!(
        "logits after 3 steps: max |diff| {max_diff:.2e}, max |logit| {max_abs:.2}, rel {rel:.2e}"
    );
    assert!(rel < 1e-3, "logits differ: relative {rel:e}");
}
