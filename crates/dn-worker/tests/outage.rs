//! The store unreachable for a while: a running job's progress writes are retried and nothing is lost; if
//! the lease ran out meanwhile and another worker took the job, the first worker writes nothing more.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

mod common;

use async_trait::async_trait;
use dn_store::{
    ClaimedJob, Heartbeat, JobFilter, JobOutcome, JobStore, Lease, NewJob, NewLogEntry, Requeued,
    Result, SqlStore, StoreStats, StoredLogEntry,
};
use dn_types::{JobStatus, LogLevel, TrainingJob};
use dn_worker::{JobRunner, RunContext, RunError, RunOutput, Worker, WorkerConfig};
use serde_json::{Map, Value};

/// A store whose worker-side writes fail with a database error while `down` is set.
struct Flaky {
    inner: Arc<SqlStore>,
    down: AtomicBool,
}

impl Flaky {
    fn check(&self) -> Result<()> {
        if self.down.load(Ordering::SeqCst) {
            return Err(dn_store::Error::Database(sqlx::Error::PoolTimedOut));
        }
        Ok(())
    }
}

#[async_trait]
impl JobStore for Flaky {
    async fn create_job(&self, job: NewJob) -> Result<TrainingJob> {
        self.inner.create_job(job).await
    }
    async fn get_job(&self, org: &str, ws: &str, id: &str) -> Result<TrainingJob> {
        self.inner.get_job(org, ws, id).await
    }
    async fn get_job_by_id(&self, id: &str) -> Result<TrainingJob> {
        self.inner.get_job_by_id(id).await
    }
    async fn list_jobs(&self, filter: &JobFilter) -> Result<(Vec<TrainingJob>, i64)> {
        self.inner.list_jobs(filter).await
    }
    async fn list_workspaces(&self, org: &str) -> Result<Vec<String>> {
        self.inner.list_workspaces(org).await
    }
    async fn claim_job(&self, worker: &str, lease: Duration) -> Result<Option<ClaimedJob>> {
        self.check()?;
        self.inner.claim_job(worker, lease).await
    }
    async fn heartbeat(&self, lease: &Lease, duration: Duration) -> Result<Heartbeat> {
        self.check()?;
        self.inner.heartbeat(lease, duration).await
    }
    async fn cancel_requested(&self, lease: &Lease) -> Result<bool> {
        self.check()?;
        self.inner.cancel_requested(lease).await
    }
    async fn append_progress(
        &self,
        lease: &Lease,
        entries: &[NewLogEntry],
        metrics: Option<&Map<String, Value>>,
    ) -> Result<()> {
        self.check()?;
        self.inner.append_progress(lease, entries, metrics).await
    }
    async fn finish_job(&self, lease: &Lease, outcome: JobOutcome) -> Result<TrainingJob> {
        self.check()?;
        self.inner.finish_job(lease, outcome).await
    }
    async fn requeue_expired(&self, max_retries: u32) -> Result<Requeued> {
        self.check()?;
        self.inner.requeue_expired(max_retries).await
    }
    async fn requeue_lost_worker(
        &self,
        worker_id: &str,
        cause: &str,
        max_retries: u32,
    ) -> Result<Requeued> {
        self.check()?;
        self.inner
            .requeue_lost_worker(worker_id, cause, max_retries)
            .await
    }
    async fn release_job(&self, lease: &Lease, reason: &str) -> Result<()> {
        self.check()?;
        self.inner.release_job(lease, reason).await
    }
    async fn cancel_job(&self, org: &str, ws: &str, id: &str) -> Result<TrainingJob> {
        self.inner.cancel_job(org, ws, id).await
    }
    async fn retry_job(&self, org: &str, ws: &str, id: &str) -> Result<TrainingJob> {
        self.inner.retry_job(org, ws, id).await
    }
    async fn list_logs(
        &self,
        org: &str,
        ws: &str,
        id: &str,
        after: i64,
    ) -> Result<Vec<StoredLogEntry>> {
        self.inner.list_logs(org, ws, id, after).await
    }
    async fn stats(&self) -> Result<StoreStats> {
        self.inner.stats().await
    }
    async fn create_expiring_api_key(
        &self,
        org: &str,
        expires_at: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<String> {
        self.inner.create_expiring_api_key(org, expires_at).await
    }
    async fn list_api_keys(&self, org: &str) -> Result<Vec<dn_store::ApiKeyInfo>> {
        self.inner.list_api_keys(org).await
    }
    async fn revoke_api_key(&self, id: &str) -> Result<Option<dn_store::ApiKeyInfo>> {
        self.inner.revoke_api_key(id).await
    }
    async fn organization_for_key(&self, key: &str) -> Result<Option<String>> {
        self.inner.organization_for_key(key).await
    }
    async fn count_api_keys(&self) -> Result<i64> {
        self.inner.count_api_keys().await
    }
}

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
    store
        .list_logs("acme", "main", id, 0)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.entry.message)
        .filter(|m| m.starts_with("step "))
        .collect()
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
