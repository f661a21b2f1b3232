//! A store whose worker-side calls fail with a database error (the pool timing out, as while PostgreSQL
//! is down) while `down` is set; the API-side calls always get through.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use dn_store::{ApiKeys, Jobs, Monitor, Queue};
use dn_store::{
    ClaimedJob, Heartbeat, JobFilter, JobOutcome, Lease, NewJob, NewLogEntry, Requeued, Result,
    SqlStore, StoreStats, StoredLogEntry,
};
use dn_types::TrainingJob;
use serde_json::{Map, Value};

/// A store whose worker-side writes fail with a database error while `down` is set.
pub struct Flaky {
    pub inner: Arc<SqlStore>,
    pub down: AtomicBool,
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
impl Jobs for Flaky {
    async fn create_job(&self, job: NewJob) -> Result<TrainingJob> {
        self.inner.create_job(job).await
    }
    async fn create_job_once(
        &self,
        job: NewJob,
        key: &str,
        fingerprint: &str,
    ) -> Result<(TrainingJob, bool)> {
        self.inner.create_job_once(job, key, fingerprint).await
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
}

#[async_trait]
impl Queue for Flaky {
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
    async fn release_job(&self, lease: &Lease, reason: &str, after: Duration) -> Result<()> {
        self.check()?;
        self.inner.release_job(lease, reason, after).await
    }
}

#[async_trait]
impl ApiKeys for Flaky {
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

#[async_trait]
impl Monitor for Flaky {
    async fn stats(&self) -> Result<StoreStats> {
        self.inner.stats().await
    }
    async fn ping(&self) -> Result<()> {
        self.check()?;
        self.inner.ping().await
    }
}
