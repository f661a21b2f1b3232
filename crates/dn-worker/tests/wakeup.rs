//! An idle worker starts a newly queued job at once, not at its next poll: on PostgreSQL through
//! LISTEN/NOTIFY (the job queued through another connection, as by a server on another node), on the
//! embedded SQLite store through the handle the server and its in-process worker share. The workers poll
//! only every 60 s here, so only a wake-up can explain a fast start. The figures are printed; the bound
//! asserted is loose (2 s) so that a loaded machine cannot make it flake.

use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;

use async_trait::async_trait;
use dn_store::SqlStore;
use dn_store::prelude::*;
use dn_types::TrainingJob;
use dn_worker::{JobRunner, RunContext, RunError, RunOutput, Worker, WorkerConfig};
use tokio::sync::{mpsc, watch};

const JOBS: usize = 5;
const BOUND: Duration = Duration::from_secs(2);

/// Reports when each job starts, and completes it.
struct Started(mpsc::UnboundedSender<Instant>);

#[async_trait]
impl JobRunner for Started {
    async fn run(&self, _job: &TrainingJob, _ctx: &RunContext) -> Result<RunOutput, RunError> {
        let _ = self.0.send(Instant::now());
        Ok(RunOutput::default())
    }
}

/// Runs a worker on `worker_store`, queues `JOBS` jobs one at a time through `queue_store` (each once the
/// worker is idle again) and returns how long each took to start.
async fn start_latencies(worker_store: Arc<SqlStore>, queue_store: &SqlStore) -> Vec<Duration> {
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let mut config = WorkerConfig::new("idle-worker");
    config.poll_interval = Duration::from_secs(60);
    let worker = Worker::new(worker_store, Arc::new(Started(started_tx)), config);
    let (stop, stopped) = watch::channel(false);
    let handle = tokio::spawn(worker.run(stopped));
    let mut latencies = Vec::new();
    for _ in 0..JOBS {
        // Long enough for the worker to record the previous job, find the queue empty and go idle.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let queued_at = Instant::now();
        queue_store.create_job(common::new_job()).await.unwrap();
        let started_at = tokio::time::timeout(Duration::from_secs(30), started.recv())
            .await
            .expect("the job started within 30 s")
            .unwrap();
        latencies.push(started_at - queued_at);
    }
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(10), handle)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    latencies
}

fn report(what: &str, latencies: &[Duration]) {
    let mut ms: Vec<f64> = latencies.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    println!(
        "{what}: idle worker started {} jobs after {:.1} ms median, {:.1} ms max (polls every 60 s)",
        ms.len(),
        ms[ms.len() / 2],
        ms[ms.len() - 1]
    );
    for latency in latencies {
        assert!(*latency < BOUND, "{what}: a job started after {latency:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_an_idle_worker_is_woken_by_notify() {
    let Some(admin_url) = dn_testkit::postgres_url() else {
        return;
    };
    let name = format!("dn_wake_{}", uuid::Uuid::new_v4().simple());
    let url = SqlStore::create_postgres_database(&admin_url, &name)
        .await
        .unwrap();
    // Two handles, two pools: the worker's node and the server's.
    let worker_store = Arc::new(SqlStore::connect(&url).await.unwrap());
    let server_store = SqlStore::connect(&url).await.unwrap();
    let latencies = start_latencies(worker_store, &server_store).await;
    report("PostgreSQL LISTEN/NOTIFY", &latencies);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_embedded_store_the_in_process_worker_is_woken_by_its_server() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqlStore::open_data_dir(dir.path()).await.unwrap());
    let latencies = start_latencies(store.clone(), &store).await;
    report("embedded SQLite, shared handle", &latencies);
}
