//! The API side of the store: create, get, list, cancel, retry, logs.

use dn_types::{JobStatus, LogLevel, TrainingJob};
use serde_json::Map;
use sqlx::Row;

use crate::error::{Error, Result};
use crate::queue::insert_event;
use crate::rows::{EVENT_COLUMNS, JOB_COLUMNS, event_from_row, job_from_row, now_micros, to_json};
use crate::sql::SqlStore;
use crate::{JobFilter, Jobs, NewJob, StoredLogEntry};
use async_trait::async_trait;

#[async_trait]
impl Jobs for SqlStore {
    async fn create_job(&self, job: NewJob) -> Result<TrainingJob> {
        let mut tx = self.begin_write().await?;
        let id = insert_job_row(&mut tx, &job).await?;
        tx.commit().await?;
        let job = self.get_job_by_id(&id).await?;
        self.job_queued().await;
        Ok(job)
    }

    async fn create_job_once(
        &self,
        job: NewJob,
        key: &str,
        fingerprint: &str,
    ) -> Result<(TrainingJob, bool)> {
        let (job, created) = crate::idempotency::create_once(self, job, key, fingerprint).await?;
        if created {
            self.job_queued().await;
        }
        Ok((job, created))
    }

    async fn get_job_by_id(&self, id: &str) -> Result<TrainingJob> {
        let row = sqlx::query(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| Error::NotFound(id.to_owned()))?;
        job_from_row(&row)
    }

    async fn get_job(&self, org: &str, ws: &str, id: &str) -> Result<TrainingJob> {
        let row = sqlx::query(&format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1 AND organization_id = $2 AND workspace_id = $3"
        ))
        .bind(id)
        .bind(org)
        .bind(ws)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| Error::NotFound(id.to_owned()))?;
        job_from_row(&row)
    }

    async fn list_workspaces(&self, org: &str) -> Result<Vec<String>> {
        let sql = format!(
            "SELECT DISTINCT workspace_id FROM jobs WHERE organization_id = $1 \
             ORDER BY workspace_id LIMIT {}",
            crate::MAX_WORKSPACES_LISTED
        );
        let rows = sqlx::query(&sql)
            .bind(org.to_owned())
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .map(|row| row.try_get("workspace_id"))
            .collect::<std::result::Result<Vec<String>, _>>()?)
    }

    async fn list_jobs(&self, filter: &JobFilter) -> Result<(Vec<TrainingJob>, i64)> {
        let mut conditions = vec!["organization_id = $1", "workspace_id = $2"];
        let mut values: Vec<String> =
            vec![filter.organization_id.clone(), filter.workspace_id.clone()];
        let optional = [
            ("status", filter.status.map(|s| s.as_str().to_owned())),
            ("backend", filter.backend.clone()),
            ("trainer_type", filter.trainer_type.clone()),
            ("project_ref", filter.project_ref.clone()),
        ];
        let mut clauses = Vec::new();
        for (column, value) in optional {
            if let Some(value) = value {
                values.push(value);
                clauses.push(format!("{column} = ${}", values.len()));
            }
        }
        conditions.extend(clauses.iter().map(String::as_str));
        let where_sql = conditions.join(" AND ");

        let count_sql = format!("SELECT COUNT(*) AS n FROM jobs WHERE {where_sql}");
        let mut count = sqlx::query(&count_sql);
        for value in &values {
            count = count.bind(value.clone());
        }
        let total: i64 = count.fetch_one(&self.pool).await?.try_get("n")?;

        let page_size = i64::from(filter.page_size.max(1));
        let offset = (i64::from(filter.page.max(1)) - 1) * page_size;
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE {where_sql} ORDER BY created_at DESC, id DESC \
             LIMIT {page_size} OFFSET {offset}"
        );
        let mut query = sqlx::query(&sql);
        for value in &values {
            query = query.bind(value.clone());
        }
        let rows = query.fetch_all(&self.pool).await?;
        let jobs = rows.iter().map(job_from_row).collect::<Result<Vec<_>>>()?;
        Ok((jobs, total))
    }

    async fn cancel_job(&self, org: &str, ws: &str, id: &str) -> Result<TrainingJob> {
        let now = now_micros();
        let scope = "id = $2 AND organization_id = $3 AND workspace_id = $4";
        let mut tx = self.begin_write().await?;
        let steps = [
            (
                format!(
                    "UPDATE jobs SET status = 'cancelled', cancel_requested_at = $1, completed_at = $1, \
                     updated_at = $1 WHERE {scope} AND status = 'queued' RETURNING {JOB_COLUMNS}"
                ),
                "job cancelled before it started",
            ),
            (
                format!(
                    "UPDATE jobs SET cancel_requested_at = COALESCE(cancel_requested_at, $1), updated_at = $1 \
                     WHERE {scope} AND status = 'running' RETURNING {JOB_COLUMNS}"
                ),
                "cancel requested: the worker stops at the next step boundary",
            ),
        ];
        for (sql, message) in steps {
            let row = sqlx::query(&sql)
                .bind(now)
                .bind(id)
                .bind(org)
                .bind(ws)
                .fetch_optional(&mut *tx)
                .await?;
            if let Some(row) = row {
                let job = job_from_row(&row)?;
                insert_event(
                    &mut tx,
                    id,
                    job.attempt,
                    LogLevel::Info,
                    message,
                    &Map::new(),
                )
                .await?;
                tx.commit().await?;
                return Ok(job);
            }
        }
        tx.rollback().await?;
        let job = self.get_job(org, ws, id).await?;
        match job.status {
            JobStatus::Cancelled => Ok(job),
            status => Err(Error::Conflict(format!(
                "training job {id} is already {status}: only queued or running jobs can be cancelled"
            ))),
        }
    }

    async fn retry_job(&self, org: &str, ws: &str, id: &str) -> Result<TrainingJob> {
        let now = now_micros();
        let mut tx = self.begin_write().await?;
        let previous = sqlx::query(
            "SELECT status, error, attempt FROM jobs WHERE id = $1 AND organization_id = $2 \
             AND workspace_id = $3",
        )
        .bind(id)
        .bind(org)
        .bind(ws)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| Error::NotFound(id.to_owned()))?;
        let status: String = previous.try_get("status")?;
        let error: Option<String> = previous.try_get("error")?;
        let attempt: i64 = previous.try_get("attempt")?;
        if status != "failed" && status != "cancelled" {
            tx.rollback().await?;
            return Err(Error::Conflict(format!(
                "training job {id} is {status}: only failed or cancelled jobs can be retried"
            )));
        }
        let row = sqlx::query(&format!(
            "UPDATE jobs SET status = 'queued', error = NULL, started_at = NULL, completed_at = NULL, \
             cancel_requested_at = NULL, metrics = '{{}}', artifacts = '{{}}', lease_owner = NULL, \
             lease_expires_at = NULL, retries = 0, not_before = NULL, updated_at = $1 WHERE id = $2 AND status = $3 RETURNING {JOB_COLUMNS}"
        ))
        .bind(now)
        .bind(id)
        .bind(&status)
        .fetch_one(&mut *tx)
        .await?;
        let job = job_from_row(&row)?;
        let mut data = Map::new();
        data.insert("previous_status".into(), status.clone().into());
        data.insert("previous_attempt".into(), attempt.into());
        if let Some(error) = &error {
            data.insert("previous_error".into(), error.clone().into());
        }
        let message =
            format!("retry requested: attempt {attempt} had ended {status}; job queued again");
        insert_event(&mut tx, id, attempt, LogLevel::Info, &message, &data).await?;
        tx.commit().await?;
        self.job_queued().await;
        Ok(job)
    }

    async fn list_logs(
        &self,
        org: &str,
        ws: &str,
        id: &str,
        after_seq: i64,
    ) -> Result<Vec<StoredLogEntry>> {
        // Scope check first so another organization's job id reads as not found.
        self.get_job(org, ws, id).await?;
        let rows = sqlx::query(&format!(
            "SELECT {EVENT_COLUMNS} FROM job_events WHERE job_id = $1 AND seq > $2 ORDER BY seq"
        ))
        .bind(id)
        .bind(after_seq)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(event_from_row).collect()
    }
}

/// Inserts a queued job (and its "job queued" event) in `tx`; its new id.
pub(crate) async fn insert_job_row(conn: &mut sqlx::AnyConnection, job: &NewJob) -> Result<String> {
    let id = uuid::Uuid::new_v4().to_string();
    let now = now_micros();
    sqlx::query(
        "INSERT INTO jobs (id, organization_id, workspace_id, status, name, backend, trainer_type, \
         model, project_ref, run_ref, dataset_ref, trajectory_dataset_refs, capability, config, metrics, \
         artifacts, tags, created_at, updated_at, attempt) VALUES ($1, $2, $3, 'queued', $4, 'tinker', \
         'sft', $5, $6, $7, $8, $9, $10, $11, '{}', '{}', $12, $13, $13, 0)",
    )
    .bind(&id)
    .bind(&job.organization_id)
    .bind(&job.workspace_id)
    .bind(job.name.clone())
    .bind(&job.model)
    .bind(job.project_ref.clone())
    .bind(job.run_ref.clone())
    .bind(job.dataset_ref.as_ref().map(to_json))
    .bind(to_json(&job.trajectory_dataset_refs))
    .bind(to_json(&job.capability))
    .bind(to_json(&job.config))
    .bind(to_json(&job.tags))
    .bind(now)
    .execute(&mut *conn)
    .await?;
    insert_event(conn, &id, 0, LogLevel::Info, "job queued", &Map::new()).await?;
    Ok(id)
}
