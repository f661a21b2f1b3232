//! Job creates under an `Idempotency-Key`: the first create with a key makes the job; a retry with the same
//! key (the client timed out, the connection dropped) gets that job back instead of a second one.

use std::time::Duration;

use dn_types::TrainingJob;
use sqlx::Row;

use crate::error::{Error, Result};
use crate::jobs::insert_job_row;
use crate::rows::now_micros;
use crate::sql::SqlStore;
use crate::{Jobs, NewJob};

/// How long a key is remembered.
pub const IDEMPOTENCY_KEY_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// [`crate::Jobs::create_job_once`]: the job and whether this call created it.
pub(crate) async fn create_once(
    store: &SqlStore,
    job: NewJob,
    key: &str,
    fingerprint: &str,
) -> Result<(TrainingJob, bool)> {
    // Two rounds at most: a concurrent create with the same key that committed first is found by
    // the second.
    for _ in 0..2 {
        let now = now_micros();
        let mut tx = store.begin_write().await?;
        let oldest = now.saturating_sub(IDEMPOTENCY_KEY_LIFETIME.as_micros() as i64);
        sqlx::query("DELETE FROM idempotency_keys WHERE created_at < $1")
            .bind(oldest)
            .execute(&mut *tx)
            .await?;
        let earlier = sqlx::query(
            "SELECT job_id, fingerprint FROM idempotency_keys \
             WHERE organization_id = $1 AND idempotency_key = $2",
        )
        .bind(&job.organization_id)
        .bind(key)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(row) = earlier {
            tx.commit().await?;
            let (job_id, earlier_fingerprint): (String, String) =
                (row.try_get("job_id")?, row.try_get("fingerprint")?);
            if earlier_fingerprint != fingerprint {
                return Err(Error::Conflict(format!(
                    "Idempotency-Key '{key}' was used for a different request (job {job_id}); \
                     use a new key for a new job"
                )));
            }
            return Ok((store.get_job_by_id(&job_id).await?, false));
        }
        let id = insert_job_row(&mut tx, &job).await?;
        let remembered = sqlx::query(
            "INSERT INTO idempotency_keys (organization_id, idempotency_key, fingerprint, job_id, \
             created_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        )
        .bind(&job.organization_id)
        .bind(key)
        .bind(fingerprint)
        .bind(&id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if remembered.rows_affected() == 1 {
            tx.commit().await?;
            return Ok((store.get_job_by_id(&id).await?, true));
        }
        tx.rollback().await?;
    }
    Err(Error::Conflict(format!(
        "Idempotency-Key '{key}': another create with this key is in progress; retry"
    )))
}
