//! Each step reports its model FLOP/s as MFU counts them (`6 N + 12 L H Q T` per token) and, with the
//! device's peak set on the worker (`--peak-tflops`), its MFU, in the step's data and its log line.

mod common;

use std::path::PathBuf;

use common::sft::{create_job_with, events, run_to_completion, setup, worker_with};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steps_report_model_flops_and_mfu_against_the_peak() {
    let setup = setup().await;
    let model = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/bnb/base");
    let job = create_job_with(&setup, &model.to_string_lossy(), "demos", &[], 3, |_| {}).await;
    let peak = 1e9;
    let worker = worker_with(&setup, |runner| runner.with_peak_flops(peak));
    let logs = run_to_completion(&setup, worker, &job).await;
    let steps = events(&logs, "step_complete");
    assert_eq!(steps.len(), 3);
    let config = dn_train::BaseModel::read_config(&model).unwrap();
    for step in &steps {
        let tflops = step["train/model_tflops_per_second"].as_f64().unwrap();
        let mfu = step["train/mfu"].as_f64().unwrap();
        assert!(tflops > 0.0);
        assert!((mfu - tflops * 1e12 / peak).abs() <= 1e-9 * mfu, "{step:?}");
        // At least 6 N FLOPs per token (the attention term on top), over the step's time.
        let tokens = step["train/num_tokens"].as_f64().unwrap();
        let seconds = step["train/step_seconds"].as_f64().unwrap();
        let six_n = config.training_flops_per_token(0.0);
        assert!(
            tflops * 1e12 * seconds >= six_n * tokens * 0.999,
            "{step:?}"
        );
    }
    let line = logs
        .iter()
        .find(|l| l.entry.data.get("event").and_then(|e| e.as_str()) == Some("step_complete"))
        .unwrap();
    assert!(
        line.entry.message.contains("MFU "),
        "{}",
        line.entry.message
    );
}
