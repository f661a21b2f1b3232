//! What a job's MLflow run says about it: its run name, tags and params, and each step's metrics.

use dn_train::StepRecord;
use dn_types::{SftConfig, TrainingJob};
use serde_json::{Map, Value};

use super::client::Metric;
use crate::tensorboard::step_scalars;

/// MLflow's longest param value (longer ones are cut, with a marker).
const MAX_PARAM_CHARS: usize = 6000;
/// MLflow's longest tag value.
const MAX_TAG_CHARS: usize = 8000;

/// The run's name: the job's name, else its id.
pub(crate) fn run_name(job: &TrainingJob) -> String {
    job.name.clone().unwrap_or_else(|| job.id.clone())
}

/// The experiment a job's run goes to without a configured name: its project, else
/// `<organization>/<workspace>`.
pub(crate) fn default_experiment(job: &TrainingJob) -> String {
    match &job.project_ref {
        Some(project) if !project.trim().is_empty() => project.clone(),
        _ => format!("{}/{}", job.organization_id, job.workspace_id),
    }
}

/// Tags set when the run is created or continued: the job, its inputs and this worker's dn.
pub(crate) fn tags(job: &TrainingJob, config: &SftConfig) -> Vec<(String, String)> {
    let mut tags = vec![
        ("mlflow.runName".to_owned(), run_name(job)),
        ("mlflow.source.name".to_owned(), "dn".to_owned()),
        ("mlflow.source.type".to_owned(), "JOB".to_owned()),
        ("dn.job_id".to_owned(), job.id.clone()),
        ("dn.organization".to_owned(), job.organization_id.clone()),
        ("dn.workspace".to_owned(), job.workspace_id.clone()),
        ("dn.model".to_owned(), job.model.clone()),
        ("dn.attempt".to_owned(), job.attempt.to_string()),
        (
            "dn.version".to_owned(),
            env!("CARGO_PKG_VERSION").to_owned(),
        ),
        (
            "dn.capability".to_owned(),
            format!("{}@{}", job.capability.name, job.capability.version),
        ),
    ];
    let digest = job.capability.content_digest.as_ref();
    if let Some(digest) = digest.or(job.capability.artifact_id.as_ref()) {
        tags.push(("dn.capability_digest".to_owned(), digest.clone()));
    }
    for (field, dataset) in config.dataset_refs() {
        // `config.trajectory_dataset_refs[0]` -> `dn.trajectory_dataset_refs.0` (MLflow keys have no brackets).
        let key = field
            .trim_start_matches("config.")
            .replace('[', ".")
            .replace(']', "");
        tags.push((format!("dn.{key}"), dataset.to_string()));
    }
    if let Some(project) = &job.project_ref {
        tags.push(("dn.project".to_owned(), project.clone()));
    }
    if !job.tags.is_empty() {
        tags.push(("dn.tags".to_owned(), job.tags.join(",")));
    }
    tags.into_iter()
        .map(|(k, v)| (k, cut(v, MAX_TAG_CHARS)))
        .collect()
}

/// The job's effective config as params: nested objects flattened with `.`, lists as JSON, nulls left out.
pub(crate) fn params(job: &TrainingJob) -> Vec<(String, String)> {
    let mut params = vec![("model".to_owned(), job.model.clone())];
    flatten("", &job.config, &mut params);
    params.sort();
    params.dedup_by(|a, b| a.0 == b.0);
    params
        .into_iter()
        .map(|(k, v)| (k, cut(v, MAX_PARAM_CHARS)))
        .collect()
}

fn flatten(prefix: &str, map: &Map<String, Value>, out: &mut Vec<(String, String)>) {
    for (key, value) in map {
        let key = format!("{prefix}{key}");
        match value {
            Value::Null => {}
            Value::Object(inner) => flatten(&format!("{key}."), inner, out),
            Value::String(s) => out.push((key, s.clone())),
            other => out.push((key, other.to_string())),
        }
    }
}

fn cut(mut value: String, max: usize) -> String {
    if value.chars().count() > max {
        value = value.chars().take(max - 3).collect::<String>() + "...";
    }
    value
}

/// A step's metrics (the TensorBoard scalars' names) stamped `timestamp_ms`.
pub(crate) fn step_metrics(
    record: &StepRecord,
    peak_flops: Option<f64>,
    timestamp_ms: i64,
) -> Vec<Metric> {
    step_scalars(record, peak_flops)
        .into_iter()
        .filter(|(_, value)| value.is_finite())
        .map(|(key, value)| Metric {
            key: key.to_owned(),
            value,
            timestamp_ms,
            step: record.step as i64,
        })
        .collect()
}

/// Milliseconds since the epoch.
pub(crate) fn now_ms() -> i64 {
    (crate::tensorboard::wall_time() * 1000.0) as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn params_flatten_the_config() {
        let mut job: TrainingJob = serde_json::from_value(json!({
            "id": "job-1", "organization_id": "acme", "workspace_id": "main", "status": "queued",
            "backend": "tinker", "trainer_type": "sft", "model": "m",
            "capability": {"name": "c", "version": "1.0.0"},
            "config": {"learning_rate": 0.0001, "dataset_ref": {"name": "d", "version": "0.1.0"},
                       "lora_target_modules": ["q_proj", "v_proj"], "seed": null, "note": "x"},
            "metrics": {}, "artifacts": {}, "created_at": "2026-12-05T00:00:00Z",
            "updated_at": "2026-12-05T00:00:00Z"
        }))
        .unwrap();
        let logged = params(&job);
        let get = |k: &str| {
            logged
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("learning_rate"), Some("0.0001"));
        assert_eq!(get("dataset_ref.name"), Some("d"));
        assert_eq!(get("lora_target_modules"), Some(r#"["q_proj","v_proj"]"#));
        assert_eq!(get("note"), Some("x"));
        assert_eq!(get("model"), Some("m"));
        assert_eq!(get("seed"), None);
        job.config.insert("long".into(), json!("y".repeat(7000)));
        let long = params(&job)
            .into_iter()
            .find(|(k, _)| k == "long")
            .unwrap()
            .1;
        assert_eq!(long.chars().count(), MAX_PARAM_CHARS);
        assert_eq!(default_experiment(&job), "acme/main");
        job.project_ref = Some("support-agent".into());
        assert_eq!(default_experiment(&job), "support-agent");
    }
}
