//! The worker side of the store: claim, heartbeat, progress, finish, and the reaper. Every write is fenced
//! by `(id, attempt, status = 'running')`.

use std::time::Duration;

use dn_types::LogLevel;
use serde_json::{Map, Value};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use crate::error::{Error, Result};
use crate::rows::{JOB_COLUMNS, job_from_row, now_micros, to_json};
use crate::sql::{Dialect, SqlStore};
use crate::{ClaimedJob, Heartbeat, JobOutcome, Lease, NewLogEntry, Queue, Requeued};
use async_trait::async_trait;

pub(crate) async fn insert_event(
    tx: &mut AnyConnection,
    job_id: &str,
    attempt: i64,
    level: LogLevel,
    message: &str,
    data: &Map<String, Value>,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO job_events (job_id, attempt, timestamp, level, message, data) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(job_id)
    .bind(attempt)
    .bind(now_micros())
    .bind(level.as_str())
    .bind(message)
    .bind(to_json(data))
    .execute(&mut *tx)
    .await?;
    Ok(())
}

fn micros(duration: Duration) -> i64 {
    i64::try_from(duration.as_micros()).unwrap_or(i64::MAX)
}

fn lease_lost(lease: &Lease) -> Error {
    Error::LeaseLost {
        job_id: lease.job_id.clone(),
        attempt: lease.attempt,
    }
}

#[async_trait]
impl Queue for SqlStore {
    async fn claim_job(&self, worker_id: &str, lease: Duration) -> Result<Option<ClaimedJob>> {
        let lock = match self.dialect {
            Dialect::Postgres => " FOR UPDATE SKIP LOCKED",
            Dialect::Sqlite => "",
        };
        let sql = format!(
            "UPDATE jobs SET status = 'running', attempt = attempt + 1, lease_owner = $1, \
             lease_expires_at = $2, started_at = $3, updated_at = $3 \
             WHERE status = 'queued' AND id = (SELECT id FROM jobs WHERE status = 'queued' \
             AND (not_before IS NULL OR not_before <= $3) \
             ORDER BY created_at, id LIMIT 1{lock}) RETURNING {JOB_COLUMNS}, retries"
        );
        let now = now_micros();
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(&sql)
            .bind(worker_id)
            .bind(now.saturating_add(micros(lease)))
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            tx.rollback().await?;
            return Ok(None);
        };
        let job = job_from_row(&row)?;
        let retries: i64 = row.try_get("retries")?;
        sqlx::query(
            "INSERT INTO job_attempts (job_id, attempt, worker_id, started_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(&job.id)
        .bind(job.attempt)
        .bind(worker_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let mut data = Map::new();
        data.insert("worker_id".into(), worker_id.into());
        data.insert("attempt".into(), job.attempt.into());
        let message = format!("claimed by worker {worker_id} (attempt {})", job.attempt);
        insert_event(
            &mut tx,
            &job.id,
            job.attempt,
            LogLevel::Info,
            &message,
            &data,
        )
        .await?;
        tx.commit().await?;
        let lease = Lease {
            job_id: job.id.clone(),
            attempt: job.attempt,
            worker_id: worker_id.to_owned(),
        };
        Ok(Some(ClaimedJob {
            job,
            lease,
            retries,
        }))
    }

    async fn heartbeat(&self, lease: &Lease, duration: Duration) -> Result<Heartbeat> {
        let now = now_micros();
        let row = sqlx::query(
            "UPDATE jobs SET lease_expires_at = $1, updated_at = $2, lease_renewals = lease_renewals + 1 \
             WHERE id = $3 AND attempt = $4 AND status = 'running' RETURNING cancel_requested_at",
        )
        .bind(now.saturating_add(micros(duration)))
        .bind(now)
        .bind(&lease.job_id)
        .bind(lease.attempt)
        .fetch_optional(&self.pool)
        .await?;
        let row = row.ok_or_else(|| lease_lost(lease))?;
        let cancel: Option<i64> = row.try_get("cancel_requested_at")?;
        Ok(Heartbeat {
            cancel_requested: cancel.is_some(),
        })
    }

    async fn cancel_requested(&self, lease: &Lease) -> Result<bool> {
        let row = sqlx::query(
            "SELECT cancel_requested_at FROM jobs WHERE id = $1 AND attempt = $2 AND status = 'running'",
        )
        .bind(&lease.job_id)
        .bind(lease.attempt)
        .fetch_optional(&self.pool)
        .await?;
        let row = row.ok_or_else(|| lease_lost(lease))?;
        let cancel: Option<i64> = row.try_get("cancel_requested_at")?;
        Ok(cancel.is_some())
    }

    async fn append_progress(
        &self,
        lease: &Lease,
        entries: &[NewLogEntry],
        metrics: Option<&Map<String, Value>>,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let now = now_micros();
        // The fence first: on PostgreSQL it also locks the row until commit, so the reaper cannot requeue
        // the job between this check and the inserts.
        let fenced = match metrics {
            Some(metrics) => sqlx::query(
                "UPDATE jobs SET metrics = $1, updated_at = $2 \
                 WHERE id = $3 AND attempt = $4 AND status = 'running'",
            )
            .bind(to_json(metrics)),
            None => sqlx::query(
                "UPDATE jobs SET updated_at = $1 WHERE id = $2 AND attempt = $3 AND status = 'running'",
            ),
        };
        let result = fenced
            .bind(now)
            .bind(&lease.job_id)
            .bind(lease.attempt)
            .execute(&mut *tx)
            .await?;
        if result.rows_affected() != 1 {
            tx.rollback().await?;
            return Err(lease_lost(lease));
        }
        for entry in entries {
            insert_event(
                &mut tx,
                &lease.job_id,
                lease.attempt,
                entry.level,
                &entry.message,
                &entry.data,
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn finish_job(
        &self,
        lease: &Lease,
        outcome: JobOutcome,
    ) -> Result<dn_types::TrainingJob> {
        let (status, error, metrics, artifacts) = match outcome {
            JobOutcome::Retry { error, after } => {
                return self.retry_later(lease, &error, after).await;
            }
            JobOutcome::Completed { metrics, artifacts } => ("completed", None, metrics, artifacts),
            JobOutcome::Failed {
                error,
                metrics,
                artifacts,
            } => ("failed", Some(error), metrics, artifacts),
            JobOutcome::Cancelled { metrics, artifacts } => ("cancelled", None, metrics, artifacts),
        };
        let now = now_micros();
        let mut tx = self.begin_write().await?;
        let row: Option<AnyRow> = sqlx::query(&format!(
            "UPDATE jobs SET status = $1, error = $2, metrics = $3, artifacts = $4, completed_at = $5, \
             updated_at = $5, lease_owner = NULL, lease_expires_at = NULL \
             WHERE id = $6 AND attempt = $7 AND status = 'running' RETURNING {JOB_COLUMNS}"
        ))
        .bind(status)
        .bind(error.clone())
        .bind(to_json(&metrics))
        .bind(to_json(&artifacts))
        .bind(now)
        .bind(&lease.job_id)
        .bind(lease.attempt)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            tx.rollback().await?;
            return Err(lease_lost(lease));
        };
        let job = job_from_row(&row)?;
        close_attempt(&mut tx, &job.id, job.attempt, status, error.as_deref(), now).await?;
        let (level, message) = match &error {
            Some(error) => (LogLevel::Error, format!("job failed: {error}")),
            None => (LogLevel::Info, format!("job {status}")),
        };
        let mut data = Map::new();
        data.insert("status".into(), status.into());
        insert_event(&mut tx, &job.id, job.attempt, level, &message, &data).await?;
        tx.commit().await?;
        Ok(job)
    }

    async fn release_job(&self, lease: &Lease, reason: &str, after: Duration) -> Result<()> {
        let now = now_micros();
        let mut tx = self.begin_write().await?;
        let released = sqlx::query(
            "UPDATE jobs SET status = 'queued', updated_at = $1, lease_owner = NULL, \
             lease_expires_at = NULL, not_before = $4 WHERE id = $2 AND attempt = $3 AND status = 'running'",
        )
        .bind(now)
        .bind(&lease.job_id)
        .bind(lease.attempt)
        .bind(now.saturating_add(micros(after)))
        .execute(&mut *tx)
        .await?;
        if released.rows_affected() != 1 {
            tx.rollback().await?;
            return Err(lease_lost(lease));
        }
        close_attempt(&mut tx, &lease.job_id, lease.attempt, "released", None, now).await?;
        let mut data = Map::new();
        data.insert("status".into(), "queued".into());
        data.insert("worker_id".into(), lease.worker_id.clone().into());
        let message = format!(
            "released to the queue by worker {}: {reason}",
            lease.worker_id
        );
        insert_event(
            &mut tx,
            &lease.job_id,
            lease.attempt,
            LogLevel::Warning,
            &message,
            &data,
        )
        .await?;
        tx.commit().await?;
        self.job_queued().await;
        Ok(())
    }

    fn queue_signal(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        Some(self.subscribe_queue())
    }

    /// Running jobs whose lease expired: their worker stopped renewing it.
    async fn requeue_expired(&self, max_retries: u32) -> Result<Requeued> {
        let lost = LostJobs {
            condition: "status = 'running' AND lease_expires_at < $1",
            owner: None,
            cause: "lease expired (worker lost)",
        };
        self.requeue_lost(&lost, max_retries).await
    }

    /// Running jobs of a worker known to be gone (its supervisor saw the process end): `cause` says how.
    async fn requeue_lost_worker(
        &self,
        worker_id: &str,
        cause: &str,
        max_retries: u32,
    ) -> Result<Requeued> {
        let lost = LostJobs {
            condition: "status = 'running' AND lease_owner = {owner}",
            owner: Some(worker_id),
            cause,
        };
        self.requeue_lost(&lost, max_retries).await
    }
}

impl SqlStore {
    /// A failed attempt that gets another try: queued again after `after`, one retry spent.
    async fn retry_later(
        &self,
        lease: &Lease,
        error: &str,
        after: Duration,
    ) -> Result<dn_types::TrainingJob> {
        let now = now_micros();
        let mut tx = self.begin_write().await?;
        let row: Option<AnyRow> = sqlx::query(&format!(
            "UPDATE jobs SET status = 'queued', error = $1, retries = retries + 1, not_before = $2, \
             updated_at = $3, lease_owner = NULL, lease_expires_at = NULL \
             WHERE id = $4 AND attempt = $5 AND status = 'running' RETURNING {JOB_COLUMNS}, retries"
        ))
        .bind(error)
        .bind(now.saturating_add(micros(after)))
        .bind(now)
        .bind(&lease.job_id)
        .bind(lease.attempt)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            tx.rollback().await?;
            return Err(lease_lost(lease));
        };
        let job = job_from_row(&row)?;
        let retries: i64 = row.try_get("retries")?;
        close_attempt(&mut tx, &job.id, job.attempt, "failed", Some(error), now).await?;
        let mut data = Map::new();
        data.insert("status".into(), "queued".into());
        data.insert("retries".into(), retries.into());
        data.insert("retry_in_seconds".into(), after.as_secs_f64().into());
        let message = format!(
            "attempt {} failed: {error}; retry {retries} in {:.1} s",
            job.attempt,
            after.as_secs_f64()
        );
        insert_event(
            &mut tx,
            &job.id,
            job.attempt,
            LogLevel::Warning,
            &message,
            &data,
        )
        .await?;
        tx.commit().await?;
        Ok(job)
    }

    /// Requeues, cancels or fails the jobs `lost` finds, and wakes idle workers for the requeued ones.
    async fn requeue_lost(&self, lost: &LostJobs<'_>, max_retries: u32) -> Result<Requeued> {
        let now = now_micros();
        let mut tx = self.begin_write().await?;
        // The owner, when there is one, is the statement's last placeholder.
        let condition = |placeholder: &str| lost.condition.replace("{owner}", placeholder);
        let owner = lost.owner.unwrap_or_default();
        let bind_owner = lost.owner.is_some();
        let cancel_sql = format!(
            "UPDATE jobs SET status = 'cancelled', completed_at = $1, updated_at = $1, lease_owner = NULL, \
             lease_expires_at = NULL WHERE {} AND cancel_requested_at IS NOT NULL \
             RETURNING id, attempt",
            condition("$2")
        );
        let mut query = sqlx::query(&cancel_sql).bind(now);
        if bind_owner {
            query = query.bind(owner);
        }
        let cancelled = query.fetch_all(&mut *tx).await?;
        let spent = format!(
            "its worker was lost (a crash, out of memory, a node gone) and its {max_retries} \
             automatic retries are spent; fix the cause and retry it"
        );
        let failed_sql = format!(
            "UPDATE jobs SET status = 'failed', error = $2, completed_at = $1, updated_at = $1, \
             lease_owner = NULL, lease_expires_at = NULL WHERE {} AND retries >= $3 \
             RETURNING id, attempt",
            condition("$4")
        );
        let mut query = sqlx::query(&failed_sql)
            .bind(now)
            .bind(&spent)
            .bind(i64::from(max_retries));
        if bind_owner {
            query = query.bind(owner);
        }
        let failed = query.fetch_all(&mut *tx).await?;
        let requeue_sql = format!(
            "UPDATE jobs SET status = 'queued', retries = retries + 1, updated_at = $1, \
             lease_owner = NULL, lease_expires_at = NULL WHERE {} RETURNING id, attempt",
            condition("$2")
        );
        let mut query = sqlx::query(&requeue_sql).bind(now);
        if bind_owner {
            query = query.bind(owner);
        }
        let requeued = query.fetch_all(&mut *tx).await?;
        let cause = lost.cause;
        let mut outcome = Requeued::default();
        let cancelled_message = format!("{cause} after a cancel request: job cancelled");
        let failed_message = format!("{cause}: job failed: {spent}");
        let requeued_message = format!("{cause}: job requeued, one retry spent");
        for (rows, status, message, ids) in [
            (
                &cancelled,
                "cancelled",
                &cancelled_message,
                &mut outcome.cancelled,
            ),
            (&failed, "failed", &failed_message, &mut outcome.failed),
            (
                &requeued,
                "queued",
                &requeued_message,
                &mut outcome.requeued,
            ),
        ] {
            for row in rows {
                let id: String = row.try_get("id")?;
                let attempt: i64 = row.try_get("attempt")?;
                close_attempt(&mut tx, &id, attempt, "lease_expired", None, now).await?;
                let mut data = Map::new();
                data.insert("status".into(), status.into());
                insert_event(&mut tx, &id, attempt, LogLevel::Warning, message, &data).await?;
                ids.push(id);
            }
        }
        tx.commit().await?;
        if !outcome.requeued.is_empty() {
            self.job_queued().await;
        }
        Ok(outcome)
    }
}

/// Which running jobs lost their worker, and how to say so in their logs.
struct LostJobs<'a> {
    /// SQL on `jobs`: `$1` is now, `{owner}` the worker's id.
    condition: &'a str,
    owner: Option<&'a str>,
    cause: &'a str,
}

async fn close_attempt(
    tx: &mut AnyConnection,
    job_id: &str,
    attempt: i64,
    outcome: &str,
    error: Option<&str>,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "UPDATE job_attempts SET ended_at = $1, outcome = $2, error = $3 \
         WHERE job_id = $4 AND attempt = $5",
    )
    .bind(now)
    .bind(outcome)
    .bind(error.map(str::to_owned))
    .bind(job_id)
    .bind(attempt)
    .execute(&mut *tx)
    .await?;
    Ok(())
}
