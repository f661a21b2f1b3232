//! Picking a job up where an earlier attempt left it: the latest committed checkpoint in storage (adapter,
//! optimizer moments, trainer state with the step history), so at most `checkpoint_interval` steps are
//! redone and the job's step series continues without duplicates.

use std::path::Path;
use std::path::PathBuf;

use dn_registry::Registry;
use dn_train::{STATE_FILE, TrainerState};
use dn_types::TrainingJob;
use serde_json::{Value, json};

use crate::runner::RunError;

pub struct ResumePoint {
    pub name: String,
    /// The downloaded checkpoint.
    pub dir: PathBuf,
    pub state: TrainerState,
    /// Every committed checkpoint of the job so far, as the artifacts list them.
    pub checkpoints: Vec<Value>,
}

/// The step a checkpoint name stands for (`step-000010`), or the trainer state's step for `final`.
fn step_of(name: &str, state: &TrainerState) -> u64 {
    name.strip_prefix("step-")
        .and_then(|n| n.parse().ok())
        .unwrap_or(state.step)
}

/// Downloads the job's latest committed checkpoint into `dest`; `None` when it has none.
pub async fn find_resume_point(
    registry: &Registry,
    job: &TrainingJob,
    dest: &Path,
) -> Result<Option<ResumePoint>, RunError> {
    let org = &job.organization_id;
    let storage = |e: dn_registry::Error| {
        RunError::storage(format!("cannot read the checkpoints of job {}", job.id), &e)
    };
    let names = registry
        .committed_checkpoints(org, &job.id)
        .await
        .map_err(storage)?;
    let Some(name) = names.last().cloned() else {
        return Ok(None);
    };
    let dir = dest.join(&name);
    registry
        .get_checkpoint(org, &job.id, &name, &dir)
        .await
        .map_err(storage)?;
    let file = dir.join(STATE_FILE);
    let text = tokio::fs::read_to_string(&file)
        .await
        .map_err(|e| RunError::io(format!("checkpoint {name}: cannot read {STATE_FILE}"), &e))?;
    let state: TrainerState = serde_json::from_str(&text)
        .map_err(|e| RunError::failed(format!("checkpoint {name}: {STATE_FILE}: {e}")))?;
    let checkpoints = names
        .iter()
        .map(|n| {
            let uri = registry.uri(&Registry::checkpoint_prefix(org, &job.id, n));
            json!({"name": n, "step": step_of(n, &state), "uri": uri})
        })
        .collect();
    Ok(Some(ResumePoint {
        name,
        dir,
        state,
        checkpoints,
    }))
}
