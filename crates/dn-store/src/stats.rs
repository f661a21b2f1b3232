//! Aggregates for monitoring (`/metrics`): jobs by status, finished attempts by outcome, the progress of
//! running jobs, and the lease renewals made through this process. Organization-blind and aggregate only,
//! so it reveals no job of anyone.

use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::Value;
use sqlx::Row;

use crate::error::Result;
use crate::sql::SqlStore;

static LEASE_RENEWALS: AtomicU64 = AtomicU64::new(0);

/// Counts a successful heartbeat made through this process.
pub(crate) fn count_lease_renewal() {
    LEASE_RENEWALS.fetch_add(1, Ordering::Relaxed);
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoreStats {
    /// `(status, jobs)`.
    pub jobs_by_status: Vec<(String, i64)>,
    /// `(outcome, attempts)` of ended attempts: completed, failed, cancelled, lease_expired, released.
    pub attempts_by_outcome: Vec<(String, i64)>,
    /// Sum over running jobs of their optimizer steps so far.
    pub running_steps: f64,
    /// Sum over running jobs of their average training tokens per second.
    pub running_tokens_per_second: f64,
    /// Heartbeats that extended a lease through this process (in-process workers of `dn serve`).
    pub lease_renewals: u64,
}

impl SqlStore {
    pub(crate) async fn stats(&self) -> Result<StoreStats> {
        let mut stats = StoreStats {
            lease_renewals: LEASE_RENEWALS.load(Ordering::Relaxed),
            ..Default::default()
        };
        for row in sqlx::query("SELECT status, COUNT(*) AS n FROM jobs GROUP BY status")
            .fetch_all(&self.pool)
            .await?
        {
            stats
                .jobs_by_status
                .push((row.try_get("status")?, row.try_get("n")?));
        }
        for row in sqlx::query(
            "SELECT outcome, COUNT(*) AS n FROM job_attempts WHERE outcome IS NOT NULL GROUP BY outcome",
        )
        .fetch_all(&self.pool)
        .await?
        {
            stats
                .attempts_by_outcome
                .push((row.try_get("outcome")?, row.try_get("n")?));
        }
        for row in sqlx::query("SELECT metrics FROM jobs WHERE status = 'running'")
            .fetch_all(&self.pool)
            .await?
        {
            let text: String = row.try_get("metrics")?;
            let metrics: Value = serde_json::from_str(&text).unwrap_or_default();
            stats.running_steps += metrics["train/steps"].as_f64().unwrap_or(0.0);
            stats.running_tokens_per_second +=
                metrics["train/tokens_per_second"].as_f64().unwrap_or(0.0);
        }
        Ok(stats)
    }
}
