//! Printing: one summary line per job, or indented JSON with --json.

use std::io::IsTerminal;

use anyhow::Result;
use dn_types::TrainingJob;
use serde::Serialize;

pub fn print_json<T: Serialize>(value: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// `{id} {status} {name or backend/trainer_type}`, as the reference CLI prints a job.
pub fn summary(job: &TrainingJob) -> String {
    let name = job.name.clone().unwrap_or_else(|| {
        let backend = serde_json::to_value(job.backend).unwrap_or_default();
        let trainer = serde_json::to_value(job.trainer_type).unwrap_or_default();
        format!(
            "{}/{}",
            backend.as_str().unwrap_or("?"),
            trainer.as_str().unwrap_or("?")
        )
    });
    format!("{} {} {}", job.id, job.status, name)
}

pub fn print_job(job: &TrainingJob, json: bool) -> Result<()> {
    if json {
        return print_json(job);
    }
    println!("{}", summary(job));
    Ok(())
}

/// `step 3/100 loss 1.234`, from what the worker reports in the job's metrics.
pub fn progress(job: &TrainingJob) -> String {
    let mut parts = vec![job.status.to_string()];
    let step = job.metrics.get("train/steps").and_then(|v| v.as_i64());
    let total = job
        .metrics
        .get("train/total_steps")
        .or_else(|| job.config.get("steps"))
        .and_then(|v| v.as_i64());
    match (step, total) {
        (Some(s), Some(t)) => parts.push(format!("step {s}/{t}")),
        (Some(s), None) => parts.push(format!("step {s}")),
        _ => {}
    }
    if let Some(loss) = job.metrics.get("train/loss_last").and_then(|v| v.as_f64()) {
        parts.push(format!("loss {loss:.4}"));
    }
    parts.join(" ")
}

pub fn stderr_is_terminal() -> bool {
    std::io::stderr().is_terminal()
}
