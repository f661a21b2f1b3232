//! The node's training gauges (what `dn worker --metrics-listen` serves on `/metrics`, in Prometheus' text
//! format) show the job a worker is training while it runs: its id, step, loss and tokens/s; and no job
//! once it ends.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::sft::{create_job_with, setup, worker_with};
use dn_store::prelude::*;
use dn_types::JobStatus;
use dn_worker::TrainingGauges;

/// The value of the first sample of `name` in `text`.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(&format!("{name}{{")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_the_running_job_s_step_and_tokens_per_second() {
    let setup = setup().await;
    let model = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/bnb/base");
    let job = create_job_with(&setup, &model.to_string_lossy(), "demos", &[], 300, |_| {}).await;
    let gauges = TrainingGauges::new("node-1");
    assert_eq!(
        sample(&gauges.render(), "dn_worker_training_active"),
        Some(0.0)
    );
    let worker = worker_with(&setup, |runner| runner.with_gauges(gauges.clone()));
    let run = tokio::spawn(async move { worker.reap_and_run_once().await.unwrap() });
    // Read while the job trains (bounded: the job itself ends within its 300 steps).
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = None;
    while seen.is_none() && !run.is_finished() && Instant::now() < deadline {
        let text = gauges.render();
        if let (Some(step), Some(tps)) = (
            sample(&text, "dn_worker_training_step"),
            sample(&text, "dn_worker_training_tokens_per_second"),
        ) && step >= 1.0
        {
            seen = Some((text, step, tps));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (text, step, tokens_per_second) = seen.expect("a reading while the job ran");
    assert!(text.contains(&format!("job_id=\"{}\"", job.id)), "{text}");
    assert!(step <= 300.0 && tokens_per_second > 0.0, "{text}");
    assert_eq!(sample(&text, "dn_worker_training_total_steps"), Some(300.0));
    assert!(sample(&text, "dn_worker_training_loss").is_some_and(f64::is_finite));
    assert!(sample(&text, "dn_worker_resident_memory_bytes").is_some_and(|b| b > 0.0));
    assert!(run.await.unwrap());
    let done = setup.store.get_job_by_id(&job.id).await.unwrap();
    assert_eq!(done.status, JobStatus::Completed, "{:?}", done.error);
    let after = gauges.render();
    assert_eq!(sample(&after, "dn_worker_training_active"), Some(0.0));
    assert!(!after.contains(&job.id), "{after}");
}
