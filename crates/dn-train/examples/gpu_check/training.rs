//! Three optimizer steps on CUDA with a checkpoint after each, then the same run stopped after step 2
//! and resumed from its checkpoint: the resumed step 3 must match, and the final adapter must be written.

use std::path::Path;

use candle_core::{DType, Device};
use dn_train::{
    ADAPTER_CONFIG_FILE, ADAPTER_FILE, BaseModel, Control, Error, Event, LoraConfig, LoraModel,
    Result, TrainOptions, TrainSummary, Trainer,
};
use serde_json::{Value, json};

use crate::random::{SMOLLM2, examples};

fn train(
    base: &BaseModel,
    dir: &Path,
    resume: Option<&Path>,
    stop_after: Option<u64>,
) -> Result<TrainSummary> {
    let model = LoraModel::new(base, &LoraConfig::new(16, 32.0), 0)?;
    let trainer = Trainer {
        model: &model,
        options: TrainOptions {
            learning_rate: 1e-3,
            batch_size: 4,
            steps: Some(3),
            checkpoint_interval: 1,
            ..Default::default()
        },
        checkpoint_dir: dir.to_path_buf(),
        base_model_name: SMOLLM2.name.into(),
    };
    let data = examples(12, &[256, 200, 180, 128], SMOLLM2.vocab, 2);
    trainer.run(&data, &[], resume, &mut |event| match event {
        Event::CheckpointSaved { step, .. } if Some(*step) == stop_after => Control::Stop,
        _ => Control::Continue,
    })
}

pub fn run(cuda: &Device, layers: usize, scratch: &Path) -> Result<Value> {
    let base = SMOLLM2.random(layers, DType::BF16, cuda)?;
    let whole = scratch.join("uninterrupted");
    let uninterrupted = train(&base, &whole, None, None)?;
    let parted = scratch.join("resumed");
    match train(&base, &parted, None, Some(2)) {
        Err(Error::Stopped { step: 2 }) => {}
        Err(e) => return Err(e),
        Ok(_) => return Err(Error::invalid("resume", "the run did not stop at step 2")),
    }
    let resumed = train(&base, &parted, Some(&parted.join("step-000002")), None)?;
    let losses = |s: &TrainSummary| s.history.iter().map(|r| r.loss).collect::<Vec<_>>();
    let (a, b) = (losses(&uninterrupted), losses(&resumed));
    let diff = (a[2] - b[2]).abs() / a[2].abs().max(1e-12);
    let adapter = parted.join("final");
    let written =
        adapter.join(ADAPTER_FILE).is_file() && adapter.join(ADAPTER_CONFIG_FILE).is_file();
    let seconds: Vec<f64> = uninterrupted
        .history
        .iter()
        .map(|r| r.step_seconds)
        .collect();
    Ok(json!({
        "ok": a.len() == 3 && b.len() == 3 && diff < 1e-3 && written,
        "losses": a,
        "resumed_losses": b,
        "step3_relative_diff": diff,
        "final_adapter_written": written,
        "step_seconds": seconds,
    }))
}
