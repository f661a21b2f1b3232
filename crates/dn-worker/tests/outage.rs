//! The store unreachable for a while: a running job keeps training and its progress is written when the
//! store answers again, nothing lost or doubled; past the lease's deadline the attempt ends and the job goes
//! back to the queue without spending a retry; if another worker took the job meanwhile, the first writes
//! nothing more. Storage or scratch space failing an attempt spends no retry either, and the worker claims
//! nothing until they work again. A worker that just reconnected waits a lease before reaping, and one
//! whose database stays away exits.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

mod common;

use async_trait::async_trait;
use common::flaky::Flaky;
use dn_store::SqlStore;
use dn_store::prelude::*;
use dn_types::{JobStatus, LogLevel, TrainingJob};
use dn_worker::{JobRunner, RunContext, RunError, RunOutput, Worker, WorkerConfig};
use serde_json::Map;

/// Logs `steps` entries 100 ms apart.
struct Steps(u32);

#[async_trait]
impl JobRunner for Steps {
    async fn run(&self, _job: &TrainingJob, ctx: &RunContext) -> Result<RunOutput, RunError> {
        for step in 1..=self.0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if ctx.lease_lost() {
                return Err(RunError::LeaseLost);
            }
            ctx.progress()
                .log(LogLevel::Info, format!("step {step}"), Map::new())
                .await?;
        }
        Ok(RunOutput::default())
    }
}

async fn setup() -> (Arc<Flaky>, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let inner = Arc::new(SqlStore::open_data_dir(dir.path()).await.unwrap());
    let job = inner.create_job(common::new_job()).await.unwrap();
    let store = Arc::new(Flaky {
        inner,
        down: AtomicBool::new(false),
    });
    (store, job.id, dir)
}

fn config(lease_ms: u64) -> WorkerConfig {
    let mut config = WorkerConfig::new("w1");
    config.lease = Duration::from_millis(lease_ms);
    config.heartbeat = Duration::from_millis(lease_ms / 4);
    config.cancel_poll = Duration::from_millis(100);
    config
}

async fn step_messages(store: &Flaky, id: &str) -> Vec<String> {
    let mut log = job_log(store, id).await;
    log.retain(|m| m.starts_with("step "));
    log
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_survives_a_short_outage_of_the_store() {
    let (store, id, _dir) = setup().await;
    let worker = Worker::new(store.clone(), Arc::new(Steps(10)), config(10_000));
    let outage = {
        let store = store.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(350)).await;
            store.down.store(true, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(1200)).await;
            store.down.store(false, Ordering::SeqCst);
        })
    };
    assert!(worker.reap_and_run_once().await.unwrap());
    outage.await.unwrap();
    let job = store.get_job_by_id(&id).await.unwrap();
    assert_eq!(job.status, JobStatus::Completed, "{:?}", job.error);
    let expected: Vec<String> = (1..=10).map(|s| format!("step {s}")).collect();
    assert_eq!(
        step_messages(&store, &id).await,
        expected,
        "each entry once, in order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_lease_ran_out_during_an_outage_writes_nothing_more() {
    let (store, id, _dir) = setup().await;
    let first = Worker::new(store.clone(), Arc::new(Steps(20)), config(400));
    let run = tokio::spawn(async move { first.reap_and_run_once().await });
    tokio::time::sleep(Duration::from_millis(250)).await;
    store.down.store(true, Ordering::SeqCst);
    // Meanwhile the lease expires and another worker (which reaches the store) takes the job over.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        store.inner.requeue_expired(3).await.unwrap().requeued,
        vec![id.clone()]
    );
    let second = store
        .inner
        .claim_job("w2", Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    store.down.store(false, Ordering::SeqCst);
    run.await.unwrap().unwrap();
    let before = step_messages(&store, &id).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        step_messages(&store, &id).await,
        before,
        "the first worker stopped writing"
    );
    let job = store.get_job_by_id(&id).await.unwrap();
    assert_eq!(
        (job.status, job.attempt),
        (JobStatus::Running, second.lease.attempt)
    );
    let logs = store.list_logs("acme", "main", &id, 0).await.unwrap();
    assert!(
        logs.iter()
            .filter(|l| l.entry.message.starts_with("step "))
            .all(|l| l.attempt == 1)
    );
}

async fn job_log(store: &Flaky, id: &str) -> Vec<String> {
    store
        .list_logs("acme", "main", id, 0)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.entry.message)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_past_the_lease_gives_the_job_back_without_spending_a_retry() {
    let (store, id, _dir) = setup().await;
    let mut config = config(600);
    config.max_retries = 0;
    config.retry_backoff = Duration::ZERO;
    let worker = Worker::new(store.clone(), Arc::new(Steps(30)), config);
    let run = tokio::spawn(async move { worker.reap_and_run_once().await });
    tokio::time::sleep(Duration::from_millis(350)).await;
    store.down.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    store.down.store(false, Ordering::SeqCst);
    assert!(
        tokio::time::timeout(Duration::from_secs(20), run)
            .await
            .unwrap()
            .unwrap()
            .unwrap()
    );
    let job = store.get_job_by_id(&id).await.unwrap();
    assert_eq!(job.status, JobStatus::Queued, "{:?}", job.error);
    let log = job_log(&store, &id).await;
    assert!(
        log.iter().any(
            |m| m.contains("the database stayed unreachable until the lease ran out")
                && m.contains("no retry spent")
        ),
        "{log:?}"
    );
    // What was trained before the deadline was written when the database came back, in order.
    let steps = step_messages(&store, &id).await;
    let expected: Vec<String> = (1..=steps.len() as u32)
        .map(|s| format!("step {s}"))
        .collect();
    assert!(steps.len() >= 3, "{steps:?}");
    assert_eq!(steps, expected);
    let again = store
        .inner
        .claim_job("w2", Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((again.lease.attempt, again.retries), (2, 0));
}

/// Fails while `down` is set, as a checkpoint upload to an unreachable bucket does; so does its check.
struct NeedsStorage(Arc<AtomicBool>);

#[async_trait]
impl JobRunner for NeedsStorage {
    async fn run(&self, _job: &TrainingJob, _ctx: &RunContext) -> Result<RunOutput, RunError> {
        if self.0.load(Ordering::SeqCst) {
            return Err(RunError::transient(
                "cannot store checkpoint step-000010: connection refused",
            ));
        }
        Ok(RunOutput::default())
    }

    async fn check_infrastructure(&self) -> Result<(), String> {
        match self.0.load(Ordering::SeqCst) {
            true => Err("storage s3://dn: connection refused".into()),
            false => Ok(()),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_storage_spends_no_retry_and_stops_claims_until_it_works() {
    let (store, id, _dir) = setup().await;
    let storage_down = Arc::new(AtomicBool::new(true));
    let mut config = config(10_000);
    config.max_retries = 0;
    config.retry_backoff = Duration::ZERO;
    let worker = Worker::new(
        store.clone(),
        Arc::new(NeedsStorage(storage_down.clone())),
        config,
    );
    assert!(worker.reap_and_run_once().await.unwrap());
    let job = store.get_job_by_id(&id).await.unwrap();
    assert_eq!(
        job.status,
        JobStatus::Queued,
        "no retry left, yet not failed: {:?}",
        job.error
    );
    assert!(
        job_log(&store, &id)
            .await
            .iter()
            .any(|m| m.contains("storage s3://dn: connection refused")
                && m.contains("no retry spent"))
    );
    assert!(
        !worker.reap_and_run_once().await.unwrap(),
        "no claim while storage is down"
    );
    assert_eq!(store.get_job_by_id(&id).await.unwrap().attempt, 1);
    storage_down.store(false, Ordering::SeqCst);
    assert!(worker.reap_and_run_once().await.unwrap());
    let job = store.get_job_by_id(&id).await.unwrap();
    assert_eq!((job.status, job.attempt), (JobStatus::Completed, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_just_reconnected_waits_a_lease_before_reaping() {
    let (store, id, _dir) = setup().await;
    // Another worker holds the job; its lease runs out during the outage.
    store
        .inner
        .claim_job("w-other", Duration::from_millis(200))
        .await
        .unwrap()
        .unwrap();
    let worker = Worker::new(store.clone(), Arc::new(Steps(1)), config(800));
    store.down.store(true, Ordering::SeqCst);
    assert!(worker.reap_and_run_once().await.is_err());
    tokio::time::sleep(Duration::from_millis(300)).await;
    store.down.store(false, Ordering::SeqCst);
    assert!(!worker.reap_and_run_once().await.unwrap());
    assert_eq!(
        store.get_job_by_id(&id).await.unwrap().status,
        JobStatus::Running,
        "not reaped yet"
    );
    tokio::time::sleep(Duration::from_millis(900)).await;
    // A lease later: reaped, then claimed and run by this worker.
    assert!(worker.reap_and_run_once().await.unwrap());
    assert_eq!(
        store.get_job_by_id(&id).await.unwrap().status,
        JobStatus::Completed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_database_stays_away_exits() {
    let (store, _id, _dir) = setup().await;
    store.down.store(true, Ordering::SeqCst);
    let mut config = config(10_000);
    config.poll_interval = Duration::from_millis(20);
    config.exit_after_outage = Some(Duration::from_millis(500));
    let worker = Worker::new(store.clone(), Arc::new(Steps(1)), config);
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    let ended = tokio::time::timeout(Duration::from_secs(10), worker.run(stopped))
        .await
        .unwrap();
    let error = ended.unwrap_err();
    assert!(error.outage >= Duration::from_millis(500), "{error}");
    assert!(
        error
            .to_string()
            .contains("the database has been unreachable"),
        "{error}"
    );
}
