//! Checkpoints: PEFT layout, and a run resumed from a checkpoint continues the exact same loss curve.

mod common;

use std::path::Path;

use common::tiny::{tiny_examples, tiny_model};
use dn_train::{
    Control, DType, Error, Event, LoraConfig, LoraModel, StepRecord, TrainOptions, TrainSummary,
    Trainer,
};

fn options() -> TrainOptions {
    TrainOptions {
        learning_rate: 5e-3,
        batch_size: 2,
        gradient_accumulation_steps: 2,
        epochs: Some(2),
        checkpoint_interval: 2,
        eval_interval: 3,
        tokens_per_pass: 16,
        ..Default::default()
    }
}

fn run(dir: &Path, resume: Option<&Path>, stop_after: Option<u64>) -> Result<TrainSummary, Error> {
    let base = tiny_model(DType::F32, true, 3);
    let model = LoraModel::new(&base, &LoraConfig::new(4, 8.0), 9).unwrap();
    let trainer = Trainer {
        model: &model,
        options: options(),
        checkpoint_dir: dir.to_path_buf(),
        base_model_name: "tiny".into(),
    };
    let (train, eval) = (tiny_examples(10, 1), tiny_examples(3, 2));
    trainer.run(&train, &eval, resume, &mut |event| match event {
        Event::CheckpointSaved { step, .. } if Some(*step) == stop_after => Control::Stop,
        _ => Control::Continue,
    })
}

fn curve(history: &[StepRecord]) -> Vec<(u64, u64, f64, f64, usize)> {
    history
        .iter()
        .map(|r| (r.step, r.epoch, r.loss, r.grad_norm, r.num_tokens))
        .collect()
}

#[test]
fn a_resumed_run_continues_the_same_loss_curve_bit_for_bit() {
    let whole = tempfile::tempdir().unwrap();
    let uninterrupted = run(whole.path(), None, None).unwrap();
    assert_eq!(uninterrupted.history.len(), 6, "2 epochs x ceil(10 / 4)");
    assert!(uninterrupted.history.last().unwrap().loss < uninterrupted.history[0].loss);

    let parted = tempfile::tempdir().unwrap();
    match run(parted.path(), None, Some(4)) {
        Err(Error::Stopped { step: 4 }) => {}
        other => panic!(
            "expected a stop at step 4, got {:?}",
            other.map(|s| s.history.len())
        ),
    }
    let resumed = run(
        parted.path(),
        Some(&parted.path().join("step-000004")),
        None,
    )
    .unwrap();
    assert_eq!(curve(&resumed.history), curve(&uninterrupted.history));
    assert_eq!(resumed.eval_history, uninterrupted.eval_history);
    let read = |dir: &Path| std::fs::read(dir.join("final").join(dn_train::ADAPTER_FILE)).unwrap();
    assert_eq!(
        read(whole.path()),
        read(parted.path()),
        "final adapters differ"
    );
}

#[test]
fn checkpoints_are_peft_adapters_with_no_partial_directory_left() {
    let dir = tempfile::tempdir().unwrap();
    let summary = run(dir.path(), None, None).unwrap();
    let names: Vec<&str> = summary
        .checkpoints
        .iter()
        .map(|(n, _)| n.as_str())
        .collect();
    assert_eq!(names, ["step-000002", "step-000004", "final"]);
    let mut entries: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    entries.sort();
    assert_eq!(entries, ["final", "step-000002", "step-000004"]);

    let final_dir = dir.path().join("final");
    let bytes = std::fs::read(final_dir.join(dn_train::ADAPTER_FILE)).unwrap();
    let tensors = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(tensors.len(), 2 * 7 * 2);
    let a = tensors
        .tensor("base_model.model.model.layers.1.self_attn.k_proj.lora_A.weight")
        .unwrap();
    assert_eq!(a.shape(), [4, 16]);
    let b = tensors
        .tensor("base_model.model.model.layers.1.self_attn.k_proj.lora_B.weight")
        .unwrap();
    assert_eq!(b.shape(), [8, 4]);
    assert_eq!(b.dtype(), safetensors::Dtype::F32);
    for (name, _) in tensors.tensors() {
        assert!(
            name.starts_with("base_model.model.model.layers.")
                && (name.ends_with(".lora_A.weight") || name.ends_with(".lora_B.weight")),
            "{name}"
        );
    }
    let config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(final_dir.join(dn_train::ADAPTER_CONFIG_FILE)).unwrap(),
    )
    .unwrap();
    assert_eq!(config["peft_type"], "LORA");
    assert_eq!(config["task_type"], "CAUSAL_LM");
    assert_eq!(config["r"], 4);
    assert_eq!(config["lora_alpha"], 8.0);
    assert_eq!(config["target_modules"].as_array().unwrap().len(), 7);
    assert_eq!(config["base_model_name_or_path"], "tiny");
}
