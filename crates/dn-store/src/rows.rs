//! Row <-> [`TrainingJob`] conversion and time helpers. Times are stored as unix microseconds.

use chrono::{DateTime, Utc};
use dn_types::{Backend, JobStatus, LogLevel, TrainerType, TrainingJob, TrainingJobLogEntry};
use serde::de::DeserializeOwned;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::StoredLogEntry;
use crate::error::{Error, Result};

/// Columns of `jobs` that make up a [`TrainingJob`], in the order [`job_from_row`] reads them by name.
pub(crate) const JOB_COLUMNS: &str = "id, organization_id, workspace_id, status, name, backend, \
    trainer_type, model, project_ref, run_ref, dataset_ref, trajectory_dataset_refs, capability, config, \
    metrics, artifacts, tags, error, created_at, started_at, completed_at, cancel_requested_at, updated_at, \
    attempt";

pub(crate) const EVENT_COLUMNS: &str = "seq, attempt, timestamp, level, message, data";

pub(crate) fn now_micros() -> i64 {
    Utc::now().timestamp_micros()
}

pub(crate) fn to_time(micros: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(micros).unwrap_or_default()
}

fn corrupt(table: &'static str, message: String) -> Error {
    Error::Corrupt { table, message }
}

fn json_column<T: DeserializeOwned>(row: &AnyRow, column: &str) -> Result<T> {
    let text: String = row.try_get(column)?;
    serde_json::from_str(&text).map_err(|e| corrupt("jobs", format!("column {column}: {e}")))
}

pub(crate) fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("serializing plain data to JSON cannot fail")
}

pub(crate) fn job_from_row(row: &AnyRow) -> Result<TrainingJob> {
    let status: String = row.try_get("status")?;
    let status = status
        .parse::<JobStatus>()
        .map_err(|e| corrupt("jobs", e))?;
    let dataset_ref: Option<String> = row.try_get("dataset_ref")?;
    let dataset_ref = dataset_ref
        .map(|text| serde_json::from_str(&text))
        .transpose()
        .map_err(|e| corrupt("jobs", format!("column dataset_ref: {e}")))?;
    let optional_time = |column: &str| -> Result<Option<DateTime<Utc>>> {
        Ok(row.try_get::<Option<i64>, _>(column)?.map(to_time))
    };
    Ok(TrainingJob {
        id: row.try_get("id")?,
        organization_id: row.try_get("organization_id")?,
        workspace_id: row.try_get("workspace_id")?,
        status,
        name: row.try_get("name")?,
        backend: Backend::Tinker,
        trainer_type: TrainerType::Sft,
        model: row.try_get("model")?,
        project_ref: row.try_get("project_ref")?,
        run_ref: row.try_get("run_ref")?,
        dataset_ref,
        trajectory_dataset_refs: json_column(row, "trajectory_dataset_refs")?,
        capability: json_column(row, "capability")?,
        config: json_column(row, "config")?,
        metrics: json_column(row, "metrics")?,
        artifacts: json_column(row, "artifacts")?,
        tags: json_column(row, "tags")?,
        error: row.try_get("error")?,
        created_at: to_time(row.try_get("created_at")?),
        started_at: optional_time("started_at")?,
        completed_at: optional_time("completed_at")?,
        cancel_requested_at: optional_time("cancel_requested_at")?,
        updated_at: to_time(row.try_get("updated_at")?),
        attempt: row.try_get("attempt")?,
    })
}

pub(crate) fn event_from_row(row: &AnyRow) -> Result<StoredLogEntry> {
    let level: String = row.try_get("level")?;
    let data: String = row.try_get("data")?;
    Ok(StoredLogEntry {
        seq: row.try_get("seq")?,
        attempt: row.try_get("attempt")?,
        entry: TrainingJobLogEntry {
            timestamp: to_time(row.try_get("timestamp")?),
            level: level
                .parse::<LogLevel>()
                .map_err(|e| corrupt("job_events", e))?,
            message: row.try_get("message")?,
            data: serde_json::from_str(&data)
                .map_err(|e| corrupt("job_events", format!("column data: {e}")))?,
        },
    })
}
