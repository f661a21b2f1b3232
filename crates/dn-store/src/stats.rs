//! Aggregates for monitoring (`/metrics`): jobs by status, finished attempts by outcome, the progress of
//! running jobs, and lease renewals. Everything is read from the database, so it covers the workers of
//! every node. Organization-blind and aggregate only, so it reveals no job of anyone.

use serde_json::Value;
use sqlx::Row;

use crate::Monitor;
use crate::error::Result;
use crate::sql::SqlStore;
use async_trait::async_trait;

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
    /// Heartbeats that extended a lease, by any worker.
    pub lease_renewals: i64,
}

#[async_trait]
impl Monitor for SqlStore {
    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn stats(&self) -> Result<StoreStats> {
        let mut stats = StoreStats::default();
        let renewals =
            sqlx::query("SELECT CAST(COALESCE(SUM(lease_renewals), 0) AS BIGINT) AS n FROM jobs")
                .fetch_one(&self.pool)
                .await?;
        stats.lease_renewals = renewals.try_get("n")?;
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
