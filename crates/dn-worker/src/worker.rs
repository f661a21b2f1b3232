//! The claim loop: reap expired leases, claim, run the attempt (`attempt.rs`); back off while the database
//! or storage is unreachable, and exit when the database stays unreachable (its supervisor restarts it).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dn_store::prelude::*;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::runner::JobRunner;

/// Timing of one worker.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Unique per worker; shows in the job's logs.
    pub worker_id: String,
    /// How long a claim stays valid without a heartbeat.
    pub lease: Duration,
    /// How often a running job's lease is extended.
    pub heartbeat: Duration,
    /// How often a running job looks for a cancel request between heartbeats (a read, no write).
    pub cancel_poll: Duration,
    /// How long an idle worker waits before looking for work again.
    pub poll_interval: Duration,
    /// On shutdown, how long the job in progress gets to reach a checkpoint and be released; after
    /// that the worker exits anyway and the job's lease runs out.
    pub shutdown_grace: Duration,
    /// Failed attempts with a retryable error get up to this many more attempts.
    pub max_retries: u32,
    /// The first retry waits about this long; each next one twice as long, up to `RETRY_BACKOFF_CAP`,
    /// with jitter (50-100% of the nominal wait) so that retries of many jobs spread out. Also how long a
    /// job the infrastructure failed waits in the queue.
    pub retry_backoff: Duration,
    /// How long the end of an attempt (its outcome, or its release) is retried while the database is
    /// unreachable before the worker leaves the job to the reaper.
    pub outcome_patience: Duration,
    /// An idle worker whose database stays unreachable this long exits with an error, so that its
    /// supervisor (dn serve, systemd) starts a fresh process; `None`: it keeps waiting.
    pub exit_after_outage: Option<Duration>,
}

/// The longest wait between automatic retries.
pub const RETRY_BACKOFF_CAP: Duration = Duration::from_secs(600);

impl WorkerConfig {
    /// The wait before retry number `retries + 1`.
    pub fn backoff(&self, retries: i64) -> Duration {
        let doublings = retries.clamp(0, 20) as i32;
        let nominal = (self.retry_backoff.as_secs_f64() * 2f64.powi(doublings))
            .min(RETRY_BACKOFF_CAP.as_secs_f64());
        Duration::from_secs_f64(nominal * rand::random_range(0.5..=1.0))
    }
}

/// Resolves when the store signals a queued job; never without a signal (or once its sender is gone).
pub async fn job_queued(signal: &mut Option<watch::Receiver<u64>>) {
    if let Some(receiver) = signal
        && receiver.changed().await.is_ok()
    {
        return;
    }
    std::future::pending().await
}

impl WorkerConfig {
    pub fn new(worker_id: impl Into<String>) -> Self {
        WorkerConfig {
            worker_id: worker_id.into(),
            lease: Duration::from_secs(60),
            heartbeat: Duration::from_secs(10),
            cancel_poll: Duration::from_secs(1),
            poll_interval: Duration::from_secs(1),
            shutdown_grace: Duration::from_secs(30),
            max_retries: 3,
            retry_backoff: Duration::from_secs(10),
            outcome_patience: Duration::from_secs(600),
            exit_after_outage: Some(Duration::from_secs(600)),
        }
    }
}

/// One worker: a store, a runner and its timing.
pub struct Worker {
    pub(crate) store: Arc<dyn JobStore>,
    pub(crate) runner: Arc<dyn JobRunner>,
    pub(crate) config: WorkerConfig,
    /// Set once shutdown begins; the job in progress sees it through its run context.
    pub(crate) preempt: Arc<AtomicBool>,
    /// Wakes an idle worker when a job is queued (default: the store's own signal).
    wake: Option<watch::Receiver<u64>>,
    /// What this worker has seen of the database lately.
    health: Mutex<StoreHealth>,
    /// Set when an attempt failed for want of storage or disk: claims wait for the runner's check.
    infrastructure_suspect: AtomicBool,
    /// Per job: attempts released as failed by an outage that was over when the worker checked.
    recovered_outages: Mutex<HashMap<String, u32>>,
}

/// The database as one worker has seen it.
#[derive(Debug, Default)]
struct StoreHealth {
    /// Since when every call failed; `None` while it answers.
    failing_since: Option<Instant>,
    /// When it answered again after failing.
    reconnected_at: Option<Instant>,
}

/// Why [`Worker::run`] gave up.
#[derive(Debug, thiserror::Error)]
#[error("the database has been unreachable for {:.0?}: {last}", .outage)]
pub struct OutageTooLong {
    pub outage: Duration,
    pub last: dn_store::Error,
}

impl Worker {
    pub fn new(store: Arc<dyn JobStore>, runner: Arc<dyn JobRunner>, config: WorkerConfig) -> Self {
        Worker {
            store,
            runner,
            config,
            preempt: Arc::new(AtomicBool::new(false)),
            wake: None,
            health: Mutex::default(),
            infrastructure_suspect: AtomicBool::new(false),
            recovered_outages: Mutex::default(),
        }
    }

    /// Wakes on `signal` instead of the store's signal: a supervised worker process learns from its
    /// supervisor that the API queued a job.
    pub fn with_wake(mut self, signal: watch::Receiver<u64>) -> Self {
        self.wake = Some(signal);
        self
    }

    /// Works until `shutdown` turns true. A job in progress is asked to checkpoint at its next safe point
    /// and is given back to the queue; the worker waits for that up to `shutdown_grace`. Ends with an
    /// error when the database stayed unreachable for `exit_after_outage`.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) -> Result<(), OutageTooLong> {
        info!(worker = %self.config.worker_id, "worker started");
        let mut failures: u32 = 0;
        // Subscribed before the first claim, so a job queued after a claim found nothing is never missed.
        let mut queued = self.wake.clone().or_else(|| self.store.queue_signal());
        while !*shutdown.borrow() {
            if let Some(queued) = queued.as_mut() {
                queued.borrow_and_update();
            }
            let work = self.reap_and_run_once();
            tokio::pin!(work);
            let result = tokio::select! {
                result = &mut work => result,
                _ = shutdown.changed() => {
                    self.preempt.store(true, Ordering::SeqCst);
                    match tokio::time::timeout(self.config.shutdown_grace, &mut work).await {
                        Ok(result) => result,
                        Err(_) => {
                            warn!(worker = %self.config.worker_id, "shutdown grace period over: leaving the job in progress to the reaper");
                            break;
                        }
                    }
                }
            };
            let (wait, wake_on_queued) = match result {
                Ok(true) => {
                    failures = 0;
                    continue;
                }
                Ok(false) => {
                    failures = 0;
                    (self.config.poll_interval, true)
                }
                Err(e) => {
                    let outage = self.failing_for();
                    if let Some(limit) = self.config.exit_after_outage
                        && outage >= limit
                    {
                        warn!(worker = %self.config.worker_id, error = %e, "database unreachable for {outage:.0?}: exiting so that a fresh process takes over");
                        return Err(OutageTooLong { outage, last: e });
                    }
                    failures = failures.saturating_add(1);
                    let backoff = self.config.poll_interval * 2u32.saturating_pow(failures.min(5));
                    warn!(worker = %self.config.worker_id, error = %e, "store unavailable; retrying in {backoff:?}");
                    (backoff, false)
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => {}
                _ = job_queued(&mut queued), if wake_on_queued => {}
            }
        }
        info!(worker = %self.config.worker_id, "worker stopped");
        Ok(())
    }

    /// Requeues expired leases, then claims and runs at most one job. `Ok(true)` if a job ran.
    pub async fn reap_and_run_once(&self) -> dn_store::Result<bool> {
        let turn = self.reap_and_claim().await;
        self.note_database(turn.as_ref().err());
        match turn? {
            Some((claimed, claimed_at)) => {
                self.run_claimed(claimed, claimed_at).await;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn reap_and_claim(&self) -> dn_store::Result<Option<(dn_store::ClaimedJob, Instant)>> {
        if self.may_reap() {
            let reaped = self.store.requeue_expired(self.config.max_retries).await?;
            for id in &reaped.requeued {
                warn!(job = %id, "lease expired: job requeued");
            }
            for id in &reaped.failed {
                warn!(job = %id, "lease expired again: retries spent, job failed");
            }
        } else {
            // Confirms the database answers before a claim (and ends the outage for `health`).
            self.store.ping().await?;
        }
        if self.infrastructure_suspect.load(Ordering::SeqCst) {
            match self.runner.check_infrastructure().await {
                Ok(()) => {
                    info!(worker = %self.config.worker_id, "storage and scratch space work again: claiming jobs");
                    self.infrastructure_suspect.store(false, Ordering::SeqCst);
                }
                Err(why) => {
                    warn!(worker = %self.config.worker_id, "not claiming jobs: {why}");
                    return Ok(None);
                }
            }
        }
        let claimed_at = Instant::now();
        let claimed = self
            .store
            .claim_job(&self.config.worker_id, self.config.lease)
            .await?;
        Ok(claimed.map(|c| (c, claimed_at)))
    }

    /// Keeps track of the outage: `error` is what the last turn met, if anything.
    fn note_database(&self, error: Option<&dn_store::Error>) {
        let mut health = self.health.lock().unwrap_or_else(|e| e.into_inner());
        match error {
            None => {
                if health.failing_since.take().is_some() {
                    health.reconnected_at = Some(Instant::now());
                }
            }
            Some(e) if e.is_unavailable() => {
                health.failing_since.get_or_insert_with(Instant::now);
            }
            Some(_) => {}
        }
    }

    /// A worker that has just reached the database again waits a lease period before reaping: the
    /// workers that kept training through the outage get to renew their leases first.
    fn may_reap(&self) -> bool {
        let health = self.health.lock().unwrap_or_else(|e| e.into_inner());
        health.failing_since.is_none()
            && health
                .reconnected_at
                .is_none_or(|at| at.elapsed() >= self.config.lease)
    }

    /// How long every call to the database has failed (zero while it answers).
    fn failing_for(&self) -> Duration {
        let health = self.health.lock().unwrap_or_else(|e| e.into_inner());
        health
            .failing_since
            .map_or(Duration::ZERO, |since| since.elapsed())
    }

    pub(crate) fn suspect_infrastructure(&self) {
        self.infrastructure_suspect.store(true, Ordering::SeqCst);
    }

    /// Counts an attempt of `job_id` released for an outage that was over when checked; the count so far.
    pub(crate) fn recovered_outage(&self, job_id: &str) -> u32 {
        let mut counts = self
            .recovered_outages
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if counts.len() > 10_000 {
            counts.clear();
        }
        let count = counts.entry(job_id.to_owned()).or_default();
        *count += 1;
        *count
    }

    /// What of the infrastructure fails now (the database, or what the runner needs), if anything: an
    /// attempt that failed meanwhile is not the job's fault. Marks the worker to check before claiming.
    pub(crate) async fn infrastructure_trouble(&self) -> Option<String> {
        let check = self.config.lease.min(Duration::from_secs(15));
        let database = tokio::time::timeout(check, self.store.ping()).await;
        let cause = match database {
            Ok(Ok(())) => {
                match tokio::time::timeout(check, self.runner.check_infrastructure()).await {
                    Ok(result) => result.err(),
                    Err(_) => Some(format!("storage or scratch space: no answer in {check:?}")),
                }
            }
            Ok(Err(e)) => Some(format!("database: {e}")),
            Err(_) => Some(format!("database: no answer in {check:?}")),
        };
        if cause.is_some() {
            self.suspect_infrastructure();
        }
        cause
    }
}
