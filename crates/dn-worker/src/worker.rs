//! The claim loop: reap expired leases, claim, heartbeat while the runner works, record the outcome.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use dn_store::{ClaimedJob, JobOutcome, JobStore, Lease};
use tokio::sync::watch;
use tracing::{Instrument, info, warn};

use crate::runner::{JobRunner, Progress, RunContext, RunError, RunOutput};

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
    /// with jitter (50-100% of the nominal wait) so that retries of many jobs spread out.
    pub retry_backoff: Duration,
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
        }
    }
}

/// One worker: a store, a runner and its timing.
pub struct Worker {
    store: Arc<dyn JobStore>,
    runner: Arc<dyn JobRunner>,
    config: WorkerConfig,
    /// Set once shutdown begins; the job in progress sees it through its run context.
    preempt: Arc<AtomicBool>,
    /// Wakes an idle worker when a job is queued (default: the store's own signal).
    wake: Option<watch::Receiver<u64>>,
}

impl Worker {
    pub fn new(store: Arc<dyn JobStore>, runner: Arc<dyn JobRunner>, config: WorkerConfig) -> Self {
        Worker {
            store,
            runner,
            config,
            preempt: Arc::new(AtomicBool::new(false)),
            wake: None,
        }
    }

    /// Wakes on `signal` instead of the store's signal: a supervised worker process learns from its
    /// supervisor that the API queued a job.
    pub fn with_wake(mut self, signal: watch::Receiver<u64>) -> Self {
        self.wake = Some(signal);
        self
    }

    /// Works until `shutdown` turns true. A job in progress is asked to checkpoint at its next safe point
    /// and is given back to the queue; the worker waits for that up to `shutdown_grace`.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
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
    }

    /// Requeues expired leases, then claims and runs at most one job. `Ok(true)` if a job ran.
    pub async fn reap_and_run_once(&self) -> dn_store::Result<bool> {
        let reaped = self.store.requeue_expired(self.config.max_retries).await?;
        for id in &reaped.requeued {
            warn!(job = %id, "lease expired: job requeued");
        }
        for id in &reaped.failed {
            warn!(job = %id, "lease expired again: retries spent, job failed");
        }
        match self
            .store
            .claim_job(&self.config.worker_id, self.config.lease)
            .await?
        {
            Some(claimed) => {
                self.run_claimed(claimed).await;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn run_claimed(&self, claimed: ClaimedJob) {
        let ClaimedJob {
            job,
            lease,
            retries,
        } = claimed;
        info!(job = %job.id, attempt = lease.attempt, worker = %lease.worker_id, "job claimed");
        let cancel = Arc::new(AtomicBool::new(job.cancel_requested_at.is_some()));
        let lease_lost = Arc::new(AtomicBool::new(false));
        let heartbeat = tokio::spawn(heartbeat_loop(
            self.store.clone(),
            lease.clone(),
            self.config.clone(),
            cancel.clone(),
            lease_lost.clone(),
        ));
        let ctx = RunContext {
            progress: Progress {
                store: self.store.clone(),
                lease: lease.clone(),
            },
            cancel,
            lease_lost,
            preempt: self.preempt.clone(),
        };
        let runner = self.runner.clone();
        let run_job = job.clone();
        // Its own task, so a panicking runner fails the job instead of leaving it running.
        // Everything the runner logs carries the job's span (id, attempt, worker).
        let span = tracing::info_span!("job", id = %job.id, attempt = lease.attempt, worker = %lease.worker_id);
        let result = tokio::spawn(async move { runner.run(&run_job, &ctx).await }.instrument(span))
            .await
            .unwrap_or_else(|e| {
                Err(RunError::transient(format!(
                    "worker crashed while running the job: {e}"
                )))
            });
        heartbeat.abort();

        let outcome = match result {
            Ok(RunOutput { metrics, artifacts }) => JobOutcome::Completed { metrics, artifacts },
            Err(RunError::Cancelled { partial }) => JobOutcome::Cancelled {
                metrics: partial.metrics,
                artifacts: partial.artifacts,
            },
            Err(RunError::Failed {
                message,
                retryable: true,
                ..
            }) if retries < i64::from(self.config.max_retries) => {
                let after = self.config.backoff(retries);
                warn!(job = %job.id, error = %message, "attempt failed; retrying in {after:?}");
                JobOutcome::Retry {
                    error: message,
                    after,
                }
            }
            Err(RunError::Failed {
                message, partial, ..
            }) => JobOutcome::Failed {
                error: message,
                metrics: partial.metrics,
                artifacts: partial.artifacts,
            },
            Err(RunError::LeaseLost) => {
                warn!(job = %job.id, attempt = lease.attempt, "lease lost: leaving the job to its new owner");
                return;
            }
            Err(RunError::Preempted) => {
                match self.store.release_job(&lease, "worker shutting down").await {
                    Ok(()) => info!(job = %job.id, "job released to the queue"),
                    Err(e) => {
                        warn!(job = %job.id, error = %e, "cannot release the job: the reaper will requeue it")
                    }
                }
                return;
            }
        };
        self.finish(&lease, outcome).await;
    }

    /// Records the outcome, retrying while the store is unreachable (bounded).
    async fn finish(&self, lease: &Lease, outcome: JobOutcome) {
        for attempt in 0..8u32 {
            match self.store.finish_job(lease, outcome.clone()).await {
                Ok(job) => {
                    info!(job = %job.id, status = %job.status, "job finished");
                    return;
                }
                Err(dn_store::Error::LeaseLost { .. }) => {
                    warn!(job = %lease.job_id, "lease lost before the outcome was recorded");
                    return;
                }
                Err(e) => {
                    warn!(job = %lease.job_id, error = %e, "cannot record the outcome; retrying");
                    tokio::time::sleep(Duration::from_millis(100 * 2u64.pow(attempt))).await;
                }
            }
        }
        warn!(job = %lease.job_id, "giving up on recording the outcome: the reaper will requeue the job");
    }
}

async fn heartbeat_loop(
    store: Arc<dyn JobStore>,
    lease: Lease,
    config: WorkerConfig,
    cancel: Arc<AtomicBool>,
    lease_lost: Arc<AtomicBool>,
) {
    let tick = config.heartbeat.min(config.cancel_poll);
    let mut last_beat = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(tick).await;
        let answer = if last_beat.elapsed() + tick / 2 >= config.heartbeat {
            let beat = store.heartbeat(&lease, config.lease).await;
            if beat.is_ok() {
                last_beat = tokio::time::Instant::now();
            }
            beat.map(|beat| beat.cancel_requested)
        } else {
            store.cancel_requested(&lease).await
        };
        match answer {
            Ok(requested) => {
                if requested {
                    cancel.store(true, Ordering::SeqCst);
                }
            }
            Err(dn_store::Error::LeaseLost { .. }) => {
                lease_lost.store(true, Ordering::SeqCst);
                return;
            }
            Err(e) => warn!(job = %lease.job_id, error = %e, "heartbeat failed; retrying"),
        }
    }
}
