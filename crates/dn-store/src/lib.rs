//! The job store: jobs, their events (logs), attempts and API keys, behind the [`JobStore`] trait.
//!
//! One implementation, [`SqlStore`], serves both databases through sqlx's `Any` driver: the SQL is written
//! once with `$N` placeholders (which SQLite accepts too); the dialects differ only in their migrations, in
//! how a claim locks (`FOR UPDATE SKIP LOCKED` on PostgreSQL, `BEGIN IMMEDIATE` on SQLite) and in pool
//! setup. Every state transition is a guarded `UPDATE` (status and attempt in its `WHERE`), so two writers
//! can never both win; the attempt number is the fencing token of a lease.
//!
//! The store holds jobs, log entries, attempts, retries with a `not_before`, releases, the monitoring
//! aggregates of `stats`, and API keys with expiry, revocation and last use. Claim locking and pool setup
//! (WAL, busy timeout) are what differ per dialect, besides the migrations (`migrations/sqlite`,
//! `migrations/postgres`). `wake` moves a counter whenever a job becomes claimable (create, retry, release,
//! requeue), so idle workers need not wait for their poll: every handle signals its own subscribers (the
//! worker processes of `dn serve`, through their stdin), and on PostgreSQL a `NOTIFY dn_job_queued` reaches a
//! listener task in every other process (reconnecting, and signalling once after each reconnect). Write
//! transactions (`write_tx`) hold a pooled connection of their own, begun and ended with plain SQL, and close
//! it instead of pooling it unless they ended cleanly (a failed COMMIT on a full disk cannot wedge the pool).
//! `idempotency` remembers each organization's `Idempotency-Key` of a create for 24 hours in the same
//! transaction as the job it made. `Error::is_unavailable` says which errors are the database's absence (pool
//! timeout, I/O, SQLITE_FULL/BUSY/IOERR, PostgreSQL classes 08, 53, 57P0x); calls wait at most
//! `db_acquire_timeout_seconds` for a connection. One test suite (`tests/store_suite.rs`) runs on both
//! backends. Why one implementation and not two: the logic that matters (guards, fencing, history) must be
//! identical, and two copies of it would drift; the trait still lets another backend be added.

mod error;
mod idempotency;
mod jobs;
mod keys;
mod queue;
mod rows;
mod sql;
mod stats;
mod wake;
mod write_tx;

use std::time::Duration;

use async_trait::async_trait;
use dn_types::{JobStatus, LogLevel, TrainingJob, TrainingJobLogEntry};
use serde_json::{Map, Value};

/// The most workspace names one listing returns.
pub const MAX_WORKSPACES_LISTED: i64 = 1000;

pub use error::{Error, Result};
pub use idempotency::IDEMPOTENCY_KEY_LIFETIME;
pub use keys::ApiKeyInfo;
pub use sql::{DEFAULT_ACQUIRE_TIMEOUT, Dialect, SqlStore};
pub use stats::StoreStats;
pub use wake::QUEUE_CHANNEL;

/// A job to create, already validated by the server.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub organization_id: String,
    pub workspace_id: String,
    pub name: Option<String>,
    pub model: String,
    pub project_ref: Option<String>,
    pub run_ref: Option<String>,
    pub dataset_ref: Option<dn_types::DatasetRef>,
    pub trajectory_dataset_refs: Vec<dn_types::DatasetRef>,
    pub capability: dn_types::CapabilitySnapshot,
    pub config: Map<String, Value>,
    pub tags: Vec<String>,
}

/// Filters and page of a job listing, always scoped to one organization and workspace.
#[derive(Debug, Clone)]
pub struct JobFilter {
    pub organization_id: String,
    pub workspace_id: String,
    pub status: Option<JobStatus>,
    pub backend: Option<String>,
    pub trainer_type: Option<String>,
    pub project_ref: Option<String>,
    /// 1-based.
    pub page: u32,
    pub page_size: u32,
}

/// Who may write to a running job: the worker that claimed it, for that attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub job_id: String,
    pub attempt: i64,
    pub worker_id: String,
}

/// A job a worker claimed, with the lease that fences its writes.
#[derive(Debug, Clone)]
pub struct ClaimedJob {
    pub job: TrainingJob,
    pub lease: Lease,
    /// Automatic retries already spent: failed attempts and lost workers (preemptions do not count).
    pub retries: i64,
}

/// A log entry (progress event or message) to append to a running job.
#[derive(Debug, Clone)]
pub struct NewLogEntry {
    pub level: LogLevel,
    pub message: String,
    pub data: Map<String, Value>,
}

/// A stored log entry with its position, for resuming a listing.
#[derive(Debug, Clone)]
pub struct StoredLogEntry {
    pub seq: i64,
    pub attempt: i64,
    pub entry: TrainingJobLogEntry,
}

/// How a worker ends its attempt.
#[derive(Debug, Clone)]
pub enum JobOutcome {
    Completed {
        metrics: Map<String, Value>,
        artifacts: Map<String, Value>,
    },
    Failed {
        error: String,
        metrics: Map<String, Value>,
        artifacts: Map<String, Value>,
    },
    /// Stopped at a safe point after a cancel request.
    Cancelled {
        metrics: Map<String, Value>,
        artifacts: Map<String, Value>,
    },
    /// Failed, but worth another attempt: back to `queued`, claimable after `after`, one retry spent.
    Retry { error: String, after: Duration },
}

/// Answer of a heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    pub cancel_requested: bool,
}

/// Jobs whose lease expired, handled by [`Queue::requeue_expired`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Requeued {
    /// Back in `queued` for another attempt.
    pub requeued: Vec<String>,
    /// Cancel had been requested: now `cancelled`.
    pub cancelled: Vec<String>,
    /// Their retries were spent (the job keeps losing its worker: a crash, out of memory): now `failed`.
    pub failed: Vec<String>,
}

/// The store's traits, for calling their methods on a concrete [`SqlStore`] (`use dn_store::prelude::*`).
pub mod prelude {
    pub use crate::{ApiKeys, JobStore, Jobs, Monitor, Queue};
}

/// Everything the server and the workers need from the database: one trait per concern, each implemented
/// for [`SqlStore`] in that concern's module (`jobs`, `queue`, `keys`, `stats`). Anything that implements
/// the four is a `JobStore`; callers hold an `Arc<dyn JobStore>`.
pub trait JobStore: Jobs + Queue + ApiKeys + Monitor {}

impl<T: Jobs + Queue + ApiKeys + Monitor + ?Sized> JobStore for T {}

/// The API side of jobs: create, read, list, cancel, retry, logs.
#[async_trait]
pub trait Jobs: Send + Sync + 'static {
    async fn create_job(&self, job: NewJob) -> Result<TrainingJob>;
    /// Creates the job unless `org` created one with `key` in the last 24 hours: then that job, and
    /// `false`. The same key with another request (`fingerprint` differs) is a `Conflict`.
    async fn create_job_once(
        &self,
        job: NewJob,
        key: &str,
        fingerprint: &str,
    ) -> Result<(TrainingJob, bool)>;
    /// A job of this organization and workspace; `NotFound` for any other.
    async fn get_job(&self, org: &str, workspace: &str, id: &str) -> Result<TrainingJob>;
    /// A job by id alone, for workers (which are trusted and org-agnostic).
    async fn get_job_by_id(&self, id: &str) -> Result<TrainingJob>;
    /// The page of jobs (newest first) and the total that match.
    async fn list_jobs(&self, filter: &JobFilter) -> Result<(Vec<TrainingJob>, i64)>;
    /// The workspaces of `org` that hold jobs, by name, at most [`MAX_WORKSPACES_LISTED`].
    async fn list_workspaces(&self, org: &str) -> Result<Vec<String>>;
    /// Queued: `cancelled` at once. Running: `cancel_requested_at` set. Cancelled: unchanged.
    /// Completed or failed: `Conflict`.
    async fn cancel_job(&self, org: &str, workspace: &str, id: &str) -> Result<TrainingJob>;
    /// Failed or cancelled: back to `queued` for a new attempt (history kept). Otherwise `Conflict`.
    async fn retry_job(&self, org: &str, workspace: &str, id: &str) -> Result<TrainingJob>;
    /// Log entries of a job after position `after_seq` (0 for all), oldest first.
    async fn list_logs(
        &self,
        org: &str,
        workspace: &str,
        id: &str,
        after_seq: i64,
    ) -> Result<Vec<StoredLogEntry>>;
}

/// The worker side: claim, heartbeat, progress and finish (each fenced by the lease), and the reaper.
#[async_trait]
pub trait Queue: Send + Sync + 'static {
    /// Claims the oldest queued job: status `running`, attempt + 1, leased to `worker_id` for `lease`.
    async fn claim_job(&self, worker_id: &str, lease: Duration) -> Result<Option<ClaimedJob>>;
    /// Extends the lease; `LeaseLost` when this attempt no longer owns the job.
    async fn heartbeat(&self, lease: &Lease, duration: Duration) -> Result<Heartbeat>;
    /// Whether cancel was requested, without extending the lease (a read between heartbeats);
    /// `LeaseLost` when this attempt no longer owns the job.
    async fn cancel_requested(&self, lease: &Lease) -> Result<bool>;
    /// Appends log entries and, if given, replaces the job's metrics; fenced by the lease.
    async fn append_progress(
        &self,
        lease: &Lease,
        entries: &[NewLogEntry],
        metrics: Option<&Map<String, Value>>,
    ) -> Result<()>;
    /// Ends the attempt; fenced by the lease.
    async fn finish_job(&self, lease: &Lease, outcome: JobOutcome) -> Result<TrainingJob>;
    /// A receiver that changes when a job may have become claimable, so an idle worker need not wait for
    /// its next poll (`None`: this store only polls). Missed changes are possible; keep polling too.
    fn queue_signal(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }
    /// Requeues running jobs whose lease expired, spending one retry (the worker was lost: a crash, out
    /// of memory, a node gone); cancels them if cancel was requested; fails them once `max_retries`
    /// retries are spent, so a job that kills its workers does not go round the fleet for ever.
    async fn requeue_expired(&self, max_retries: u32) -> Result<Requeued>;
    /// [`requeue_expired`](Self::requeue_expired) for the running jobs of one worker known to be gone
    /// (its supervisor saw the process end) without waiting for their leases: `cause` (how it ended)
    /// goes into each job's log.
    async fn requeue_lost_worker(
        &self,
        worker_id: &str,
        cause: &str,
        max_retries: u32,
    ) -> Result<Requeued>;
    /// Gives a running job back to the queue without spending a retry (the worker is shutting down, or
    /// the infrastructure it needs is unreachable: not the job's fault), claimable again after `after`;
    /// `reason` goes into the job's log. Fenced by the lease.
    async fn release_job(&self, lease: &Lease, reason: &str, after: Duration) -> Result<()>;
}

/// API keys: created per organization, stored hashed, with expiry and revocation.
#[async_trait]
pub trait ApiKeys: Send + Sync + 'static {
    /// Creates an API key for `org` and returns it in clear (stored hashed).
    async fn create_api_key(&self, org: &str) -> Result<String> {
        self.create_expiring_api_key(org, None).await
    }
    /// [`ApiKeys::create_api_key`], refused (401) from `expires_at` on.
    async fn create_expiring_api_key(
        &self,
        org: &str,
        expires_at: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<String>;
    /// The organization of a key that exists, is not revoked and has not expired.
    async fn organization_for_key(&self, key: &str) -> Result<Option<String>>;
    async fn count_api_keys(&self) -> Result<i64>;
    /// The keys of `org` (never their secrets), oldest first.
    async fn list_api_keys(&self, org: &str) -> Result<Vec<ApiKeyInfo>>;
    /// Revokes a key by its id; `None` if no key has that id.
    async fn revoke_api_key(&self, id: &str) -> Result<Option<ApiKeyInfo>>;
}

/// Monitoring: aggregates and a liveness probe.
#[async_trait]
pub trait Monitor: Send + Sync + 'static {
    /// Aggregates for monitoring (no per-job or per-organization detail).
    async fn stats(&self) -> Result<StoreStats>;
    /// Whether the database answers (readiness checks, a worker deciding whether an outage is over).
    async fn ping(&self) -> Result<()>;
}
