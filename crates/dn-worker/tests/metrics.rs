//! The node's `/metrics` (Prometheus' text format) shows the job a worker is training while it runs: its
//! id, step, loss and tokens/s; and no job once it ends.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::sft::{create_job_with, setup, worker_with};
use dn_store::prelude::*;
use dn_types::JobStatus;
use dn_worker::{TrainingGauges, serve_metrics};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn scrape(addr: std::net::SocketAddr) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
}

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
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(serve_metrics(listener, gauges.clone(), stopped));
    assert_eq!(
        sample(&scrape(addr).await, "dn_worker_training_active"),
        Some(0.0)
    );
    let worker = worker_with(&setup, |runner| runner.with_gauges(gauges.clone()));
    let run = tokio::spawn(async move { worker.reap_and_run_once().await.unwrap() });
    // Scraped while the job trains (bounded: the job itself ends within its 300 steps).
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = None;
    while seen.is_none() && !run.is_finished() && Instant::now() < deadline {
        let text = scrape(addr).await;
        if let (Some(step), Some(tps)) = (
            sample(&text, "dn_worker_training_step"),
            sample(&text, "dn_worker_training_tokens_per_second"),
        ) && step >= 1.0
        {
            seen = Some((text, step, tps));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (text, step, tokens_per_second) = seen.expect("a scrape while the job ran");
    assert!(text.contains(&format!("job_id=\"{}\"", job.id)), "{text}");
    assert!(step <= 300.0 && tokens_per_second > 0.0, "{text}");
    assert_eq!(sample(&text, "dn_worker_training_total_steps"), Some(300.0));
    assert!(sample(&text, "dn_worker_training_loss").is_some_and(f64::is_finite));
    assert!(sample(&text, "dn_worker_resident_memory_bytes").is_some_and(|b| b > 0.0));
    assert!(run.await.unwrap());
    let done = setup.store.get_job_by_id(&job.id).await.unwrap();
    assert_eq!(done.status, JobStatus::Completed, "{:?}", done.error);
    let after = scrape(addr).await;
    assert_eq!(sample(&after, "dn_worker_training_active"), Some(0.0));
    assert!(!after.contains(&job.id), "{after}");
    stop.send(true).unwrap();
    server.await.unwrap().unwrap();
}
