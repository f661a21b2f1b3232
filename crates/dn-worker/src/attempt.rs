//! One claimed attempt: heartbeats while the runner works, then how the attempt ends: an outcome recorded,
//! a retry spent, or the job given back to the queue without spending one when the infrastructure (the
//! database, storage, a full disk) failed it rather than the job.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use dn_store::prelude::*;
use dn_store::{ClaimedJob, JobOutcome, Lease};
use tracing::{Instrument, info, warn};

use crate::progress::{LeaseClock, Progress};
use crate::runner::{RunContext, RunError, RunOutput};
use crate::worker::{Worker, WorkerConfig};

/// Releases without spending a retry of one job whose outage was over when the worker checked, at most.
const MAX_RELEASES_AFTER_RECOVERY: u32 = 3;

/// How an attempt ends in the store.
#[derive(Debug, Clone)]
enum Ending {
    Finish(JobOutcome),
    /// Back to the queue, no retry spent, claimable after `after`.
    Release {
        reason: String,
        after: Duration,
    },
}

impl Worker {
    /// Runs a job claimed at `claimed_at` and records how the attempt ended.
    pub(crate) async fn run_claimed(&self, claimed: ClaimedJob, claimed_at: Instant) {
        let ClaimedJob {
            job,
            lease,
            retries,
        } = claimed;
        info!(job = %job.id, attempt = lease.attempt, worker = %lease.worker_id, "job claimed");
        let clock = Arc::new(LeaseClock::new(claimed_at, self.config.lease));
        let cancel = Arc::new(AtomicBool::new(job.cancel_requested_at.is_some()));
        let lease_lost = Arc::new(AtomicBool::new(false));
        let heartbeat = tokio::spawn(heartbeat_loop(
            self.store.clone(),
            lease.clone(),
            self.config.clone(),
            clock.clone(),
            cancel.clone(),
            lease_lost.clone(),
        ));
        let progress = Progress::new(self.store.clone(), lease.clone(), clock);
        let ctx = RunContext {
            progress: progress.clone(),
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
        let Some(ending) = self.ending(&job.id, result, retries).await else {
            warn!(job = %job.id, attempt = lease.attempt, "lease lost: leaving the job to its new owner");
            return;
        };
        self.record(&lease, &progress, ending).await;
    }

    /// What the runner's result means for the job; `None` when this worker no longer owns it.
    async fn ending(
        &self,
        job_id: &str,
        result: Result<RunOutput, RunError>,
        retries: i64,
    ) -> Option<Ending> {
        let ending = match result {
            Ok(RunOutput { metrics, artifacts }) => {
                Ending::Finish(JobOutcome::Completed { metrics, artifacts })
            }
            Err(RunError::Cancelled { partial }) => Ending::Finish(JobOutcome::Cancelled {
                metrics: partial.metrics,
                artifacts: partial.artifacts,
            }),
            Err(RunError::LeaseLost) => return None,
            Err(RunError::Preempted) => Ending::Release {
                reason: "worker shutting down".into(),
                after: Duration::ZERO,
            },
            Err(RunError::Unavailable { message }) => {
                match self.infrastructure_trouble().await {
                    Some(cause) => self.infrastructure_release(job_id, &message, Some(&cause)),
                    // Over by now: another attempt will likely get through. A job whose attempts keep
                    // meeting an "outage" that is over at once is not meeting one: after a few such
                    // releases it spends retries like any failure.
                    None if self.recovered_outage(job_id) <= MAX_RELEASES_AFTER_RECOVERY => {
                        self.infrastructure_release(job_id, &message, None)
                    }
                    None => {
                        self.retry_or_fail(job_id, message, RunOutput::default(), true, retries)
                    }
                }
            }
            Err(RunError::Failed {
                message,
                partial,
                retryable,
            }) => {
                let trouble = match retryable {
                    true => self.infrastructure_trouble().await,
                    false => None,
                };
                match trouble {
                    Some(cause) => self.infrastructure_release(job_id, &message, Some(&cause)),
                    None => self.retry_or_fail(job_id, message, *partial, retryable, retries),
                }
            }
        };
        Some(ending)
    }

    /// Another attempt after a backoff while retries remain and the failure may pass; else failed.
    fn retry_or_fail(
        &self,
        job_id: &str,
        message: String,
        partial: RunOutput,
        retryable: bool,
        retries: i64,
    ) -> Ending {
        if retryable && retries < i64::from(self.config.max_retries) {
            let after = self.config.backoff(retries);
            warn!(job = %job_id, error = %message, "attempt failed; retrying in {after:?}");
            return Ending::Finish(JobOutcome::Retry {
                error: message,
                after,
            });
        }
        Ending::Finish(JobOutcome::Failed {
            error: message,
            metrics: partial.metrics,
            artifacts: partial.artifacts,
        })
    }

    fn infrastructure_release(&self, job_id: &str, message: &str, cause: Option<&str>) -> Ending {
        let cause = cause.map(|c| format!(" ({c})")).unwrap_or_default();
        let reason = format!(
            "the infrastructure failed the attempt, not the job: {message}{cause}; no retry spent"
        );
        let after = self.config.retry_backoff;
        warn!(job = %job_id, "{reason}; back to the queue in {after:?}");
        Ending::Release { reason, after }
    }

    /// Records how the attempt ended (after what progress is still kept in memory), waiting for the
    /// database while it is unreachable: pauses grow to a quarter of the lease at most, so that this
    /// worker writes before a peer's reaper (which waits a whole lease after reconnecting) takes the job.
    /// Gives up after `outcome_patience`; the reaper requeues the job then.
    async fn record(&self, lease: &Lease, progress: &Progress, ending: Ending) {
        let started = Instant::now();
        let cap = (self.config.lease / 4).clamp(Duration::from_millis(10), Duration::from_secs(5));
        let mut delay = Duration::from_millis(100).min(cap);
        loop {
            let written = match progress.write_pending().await {
                Ok(()) => self.write_ending(lease, &ending).await,
                Err(e) => Err(e),
            };
            match written {
                Ok(()) => return,
                Err(dn_store::Error::LeaseLost { .. }) => {
                    warn!(job = %lease.job_id, "lease lost before the attempt's end was recorded");
                    return;
                }
                Err(e) if started.elapsed() < self.config.outcome_patience => {
                    warn!(job = %lease.job_id, error = %e, "cannot record the attempt's end; retrying in {delay:?}");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(cap);
                }
                Err(e) => {
                    warn!(job = %lease.job_id, error = %e, "giving up on recording the attempt's end: the reaper will requeue the job");
                    return;
                }
            }
        }
    }

    async fn write_ending(&self, lease: &Lease, ending: &Ending) -> dn_store::Result<()> {
        match ending {
            Ending::Finish(outcome) => {
                let job = self.store.finish_job(lease, outcome.clone()).await?;
                info!(job = %job.id, status = %job.status, "job finished");
            }
            Ending::Release { reason, after } => {
                self.store.release_job(lease, reason, *after).await?;
                info!(job = %lease.job_id, "job released to the queue");
            }
        }
        Ok(())
    }
}

async fn heartbeat_loop(
    store: Arc<dyn JobStore>,
    lease: Lease,
    config: WorkerConfig,
    clock: Arc<LeaseClock>,
    cancel: Arc<AtomicBool>,
    lease_lost: Arc<AtomicBool>,
) {
    let tick = config.heartbeat.min(config.cancel_poll);
    let mut last_beat = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(tick).await;
        let answer = if last_beat.elapsed() + tick / 2 >= config.heartbeat {
            let sent = Instant::now();
            let beat = store.heartbeat(&lease, config.lease).await;
            if beat.is_ok() {
                last_beat = tokio::time::Instant::now();
                clock.renewed(sent);
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
