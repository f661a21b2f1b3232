//! The worker loop with runners that succeed, fail, panic, honour cancellation, or lose their lease.

use std::sync::Arc;
use std::time::Duration;

mod common;

use async_trait::async_trait;
use dn_store::SqlStore;
use dn_store::prelude::*;
use dn_types::{JobStatus, LogLevel, TrainingJob};
use dn_worker::{
    JobRunner, RunContext, RunError, RunOutput, UnavailableTrainer, Worker, WorkerConfig,
};
use serde_json::{Map, json};

async fn store() -> (Arc<SqlStore>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    (
        Arc::new(SqlStore::open_data_dir(dir.path()).await.unwrap()),
        dir,
    )
}

async fn submit(store: &SqlStore) -> String {
    store.create_job(common::new_job()).await.unwrap().id
}

fn config(lease_ms: u64, heartbeat_ms: u64) -> WorkerConfig {
    let mut config = WorkerConfig::new("w1");
    config.lease = Duration::from_millis(lease_ms);
    config.heartbeat = Duration::from_millis(heartbeat_ms);
    config.poll_interval = Duration::from_millis(20);
    config
}

async fn run_one(
    store: &Arc<SqlStore>,
    runner: Arc<dyn JobRunner>,
    config: WorkerConfig,
) -> TrainingJob {
    let id = submit(store).await;
    let worker = Worker::new(store.clone(), runner, config);
    assert!(
        worker.reap_and_run_once().await.unwrap(),
        "a job was claimed"
    );
    store.get_job_by_id(&id).await.unwrap()
}

#[tokio::test]
async fn without_a_trainer_jobs_fail_clearly() {
    let (store, _dir) = store().await;
    let job = run_one(&store, Arc::new(UnavailableTrainer), config(60_000, 10_000)).await;
    assert_eq!(
        (job.status, job.error.as_deref()),
        (JobStatus::Failed, Some("trainer not available"))
    );
}

struct Reporting;

#[async_trait]
impl JobRunner for Reporting {
    async fn run(&self, _job: &TrainingJob, ctx: &RunContext) -> Result<RunOutput, RunError> {
        let mut metrics = Map::new();
        metrics.insert("train/steps".into(), json!(1));
        let data = json!({"event": "step_complete", "train/loss": 1.5})
            .as_object()
            .unwrap()
            .clone();
        ctx.progress()
            .log(LogLevel::Info, "step 1 complete", data)
            .await?;
        ctx.progress().report(&[], Some(&metrics)).await?;
        Ok(RunOutput {
            metrics,
            artifacts: json!({"final": "x"}).as_object().unwrap().clone(),
        })
    }
}

#[tokio::test]
async fn progress_and_outcome_are_recorded() {
    let (store, _dir) = store().await;
    let job = run_one(&store, Arc::new(Reporting), config(60_000, 10_000)).await;
    assert_eq!(job.status, JobStatus::Completed);
    assert_eq!(
        (
            job.metrics["train/steps"].as_i64(),
            job.artifacts["final"].as_str()
        ),
        (Some(1), Some("x"))
    );
    let logs = store.list_logs("acme", "main", &job.id, 0).await.unwrap();
    assert!(
        logs.iter()
            .any(|l| l.entry.message == "step 1 complete" && l.entry.data["train/loss"] == 1.5)
    );
}

struct Panicking;

#[async_trait]
impl JobRunner for Panicking {
    async fn run(&self, _job: &TrainingJob, _ctx: &RunContext) -> Result<RunOutput, RunError> {
        panic!("bug in the runner");
    }
}

#[tokio::test]
async fn a_panicking_runner_fails_the_job_instead_of_leaving_it_running() {
    let (store, _dir) = store().await;
    let mut no_retries = config(60_000, 10_000);
    no_retries.max_retries = 0;
    let job = run_one(&store, Arc::new(Panicking), no_retries).await;
    assert_eq!(job.status, JobStatus::Failed);
    assert!(job.error.unwrap().contains("worker crashed"));
}

/// Fails with a retryable error the first `failures` times, then completes.
struct Flaky {
    failures: std::sync::atomic::AtomicU32,
}

impl Flaky {
    fn new(failures: u32) -> Arc<Self> {
        Arc::new(Flaky {
            failures: failures.into(),
        })
    }
}

#[async_trait]
impl JobRunner for Flaky {
    async fn run(&self, _job: &TrainingJob, _ctx: &RunContext) -> Result<RunOutput, RunError> {
        let left = self.failures.load(std::sync::atomic::Ordering::SeqCst);
        if left > 0 {
            self.failures
                .store(left - 1, std::sync::atomic::Ordering::SeqCst);
            return Err(RunError::transient(format!("storage unavailable ({left})")));
        }
        Ok(RunOutput::default())
    }
}

fn retrying(max_retries: u32) -> WorkerConfig {
    let mut config = config(60_000, 10_000);
    config.max_retries = max_retries;
    config.retry_backoff = Duration::from_millis(100);
    config
}

#[tokio::test]
async fn retryable_failures_are_retried_after_a_backoff_then_complete() {
    let (store, _dir) = store().await;
    let id = submit(&store).await;
    // A backoff of seconds: the check that it is not claimable yet must not race the backoff's end.
    let mut config = retrying(3);
    config.retry_backoff = Duration::from_secs(1);
    let worker = Worker::new(store.clone(), Flaky::new(2), config);
    for retry in 1..=2 {
        assert!(worker.reap_and_run_once().await.unwrap());
        let job = store.get_job_by_id(&id).await.unwrap();
        assert_eq!(job.status, JobStatus::Queued, "retry {retry} is queued");
        assert!(job.error.unwrap().contains("storage unavailable"));
        // Not claimable before its backoff (at least half the nominal 1 s x 2^(retry-1)).
        assert!(
            !worker.reap_and_run_once().await.unwrap(),
            "retry {retry} waits for its backoff"
        );
        tokio::time::sleep(Duration::from_millis(1000 << (retry - 1))).await;
    }
    assert!(worker.reap_and_run_once().await.unwrap());
    let job = store.get_job_by_id(&id).await.unwrap();
    assert_eq!((job.status, job.attempt), (JobStatus::Completed, 3));
    let logs = store.list_logs("acme", "main", &id, 0).await.unwrap();
    let retries = logs
        .iter()
        .filter(|l| l.entry.message.contains("failed: storage unavailable"))
        .count();
    assert_eq!(retries, 2, "each retry is logged");
}

#[tokio::test]
async fn retries_end_at_the_maximum_with_the_last_error() {
    let (store, _dir) = store().await;
    let id = submit(&store).await;
    let worker = Worker::new(store.clone(), Flaky::new(5), retrying(1));
    assert!(worker.reap_and_run_once().await.unwrap());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(worker.reap_and_run_once().await.unwrap());
    let job = store.get_job_by_id(&id).await.unwrap();
    assert_eq!((job.status, job.attempt), (JobStatus::Failed, 2));
    assert_eq!(job.error.as_deref(), Some("storage unavailable (4)"));
}

#[test]
fn backoff_doubles_up_to_its_cap_with_jitter() {
    let config = retrying(3);
    for (retries, nominal) in [(0, 0.1), (1, 0.2), (3, 0.8), (30, 600.0)] {
        let wait = config.backoff(retries).as_secs_f64();
        assert!(
            wait >= nominal * 0.5 - 1e-9 && wait <= nominal + 1e-9,
            "retry {retries}: {wait}"
        );
    }
}

/// Works in 10 ms "steps" until cancelled (at most 10 s).
struct Cancellable;

#[async_trait]
impl JobRunner for Cancellable {
    async fn run(&self, _job: &TrainingJob, ctx: &RunContext) -> Result<RunOutput, RunError> {
        for _ in 0..1000 {
            if ctx.cancel_requested() {
                return Err(RunError::Cancelled {
                    partial: Box::default(),
                });
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Err(RunError::failed("never cancelled"))
    }
}

#[tokio::test]
async fn cancel_reaches_a_running_job_through_the_heartbeat() {
    let (store, _dir) = store().await;
    let id = submit(&store).await;
    let worker = Worker::new(store.clone(), Arc::new(Cancellable), config(5_000, 50));
    let run = tokio::spawn(async move { worker.reap_and_run_once().await });
    for _ in 0..200 {
        if store.get_job_by_id(&id).await.unwrap().status == JobStatus::Running {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started = std::time::Instant::now();
    store.cancel_job("acme", "main", &id).await.unwrap();
    run.await.unwrap().unwrap();
    let job = store.get_job_by_id(&id).await.unwrap();
    assert_eq!(job.status, JobStatus::Cancelled);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "cancelled within {:?}",
        started.elapsed()
    );
}

/// Sleeps past its lease (no heartbeat in time), then tries to report.
struct Slow;

#[async_trait]
impl JobRunner for Slow {
    async fn run(&self, _job: &TrainingJob, ctx: &RunContext) -> Result<RunOutput, RunError> {
        tokio::time::sleep(Duration::from_millis(300)).await;
        ctx.progress()
            .log(LogLevel::Info, "late", Map::new())
            .await?;
        Ok(RunOutput::default())
    }
}

#[tokio::test]
async fn a_worker_that_lost_its_lease_writes_nothing() {
    let (store, _dir) = store().await;
    let id = submit(&store).await;
    let worker = Worker::new(store.clone(), Arc::new(Slow), config(50, 10_000));
    let run = tokio::spawn(async move { worker.reap_and_run_once().await });
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(
        store.requeue_expired(3).await.unwrap().requeued,
        vec![id.clone()]
    );
    run.await.unwrap().unwrap();
    let job = store.get_job_by_id(&id).await.unwrap();
    assert_eq!(
        job.status,
        JobStatus::Queued,
        "the stale worker did not complete it"
    );
    let logs = store.list_logs("acme", "main", &id, 0).await.unwrap();
    assert!(logs.iter().all(|l| l.entry.message != "late"));
}

/// Sleeps past its lease, then asks whether it may still commit something outside the store.
struct CommitsLate(Arc<std::sync::Mutex<Option<bool>>>);

#[async_trait]
impl JobRunner for CommitsLate {
    async fn run(&self, _job: &TrainingJob, ctx: &RunContext) -> Result<RunOutput, RunError> {
        ctx.progress().ensure_lease().await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let owned = ctx.progress().ensure_lease().await;
        *self.0.lock().unwrap() = Some(owned.is_ok());
        owned?;
        Ok(RunOutput::default())
    }
}

#[tokio::test]
async fn a_worker_that_lost_its_lease_is_told_before_it_commits_a_checkpoint() {
    let (store, _dir) = store().await;
    let id = submit(&store).await;
    let answer = Arc::new(std::sync::Mutex::new(None));
    let runner = Arc::new(CommitsLate(answer.clone()));
    let worker = Worker::new(store.clone(), runner, config(50, 10_000));
    let run = tokio::spawn(async move { worker.reap_and_run_once().await });
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(store.requeue_expired(3).await.unwrap().requeued, vec![id]);
    run.await.unwrap().unwrap();
    assert_eq!(*answer.lock().unwrap(), Some(false), "the lease was gone");
}

#[tokio::test]
async fn run_stops_on_shutdown() {
    let (store, _dir) = store().await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let worker = Worker::new(
        store.clone(),
        Arc::new(UnavailableTrainer),
        config(60_000, 10_000),
    );
    let handle = tokio::spawn(worker.run(stopped));
    let id = submit(&store).await;
    for _ in 0..200 {
        if store.get_job_by_id(&id).await.unwrap().status == JobStatus::Failed {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        store.get_job_by_id(&id).await.unwrap().status,
        JobStatus::Failed
    );
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), handle)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
