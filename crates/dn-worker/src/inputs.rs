//! A job's training inputs: the model's artifacts, the capability's system prompt, and every dataset row
//! normalized, scaffolded, rendered and masked, in a deterministic order (the dataset, then each trajectory
//! dataset in the order given; files in manifest order; rows in file order).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use dn_data::Error as RowError;
use dn_model::hub::Need;
use dn_registry::Registry;
use dn_render::{Example, PrepareStats};
use dn_train::DeviceSpec;
use dn_types::{ArtifactRef, SftConfig, TrainingJob};
use serde_json::{Map, Value, json};

use crate::dataprep::{DataFile, PrepareRequest, Unobserved, load_model, prepare_groups};
use crate::runner::RunError;
use crate::sandbox::{Sandbox, prepare_in_child};
use crate::training::check_memory;

/// What the trainer consumes.
pub struct PreparedInputs {
    /// The model's family (from its config.json).
    pub family: dn_arch::Family,
    pub config: SftConfig,
    pub train: Vec<Example>,
    pub train_stats: PrepareStats,
    pub eval: Vec<Example>,
    pub eval_stats: Option<PrepareStats>,
    /// Rows that fit no shape, in order (file and row number in each).
    pub skipped_rows: Vec<RowError>,
    /// Eval conversations to complete after evaluating (`eval_samples` of them at most).
    pub eval_samples: Vec<dn_render::EvalPrompt>,
    /// The ids that end an assistant turn.
    pub stop_ids: Vec<u32>,
}

impl PreparedInputs {
    /// The data counts for the job log.
    pub fn summary(&self) -> Map<String, Value> {
        let mut data = Map::new();
        data.insert("event".into(), "data_prepared".into());
        data.insert("model_family".into(), self.family.name().into());
        data.insert("train".into(), json!(self.train_stats));
        if let Some(eval) = &self.eval_stats {
            data.insert("eval".into(), json!(eval));
        }
        data.insert("skipped_rows".into(), self.skipped_rows.len().into());
        data
    }
}

fn failed(message: impl Into<String>) -> RunError {
    RunError::failed(message)
}

/// A registry read that failed: storage trouble may pass (retried), anything else is the input's fault.
fn registry_error(what: String, e: dn_registry::Error) -> RunError {
    match e {
        dn_registry::Error::Storage(_) => RunError::storage(what, &e),
        _ => failed(format!("{what}: {e}")),
    }
}

/// The files of one dataset version, downloaded into `dir` (named by their position, `first` onwards).
async fn download_dataset(
    registry: &Registry,
    org: &str,
    reference: &ArtifactRef,
    dir: &Path,
    first: usize,
) -> Result<Vec<DataFile>, RunError> {
    let owner = reference.org_or(org);
    let manifest = registry
        .dataset(owner, &reference.name, &reference.version)
        .await
        .map_err(|e| registry_error(format!("dataset {reference}"), e))?;
    dn_data::readable(manifest.format, &reference.to_string())
        .map_err(|e| failed(e.to_string()))?;
    let mut files = Vec::new();
    for file in &manifest.data_files {
        let path = dir.join(format!("{:04}", first + files.len()));
        registry
            .download_dataset_file(&manifest, file, &path)
            .await
            .map_err(|e| registry_error(format!("dataset {reference}"), e))?;
        files.push(DataFile {
            label: format!("{reference}/{file}"),
            format: manifest.format,
            path,
        });
    }
    Ok(files)
}

/// Where a job's data is prepared: in this process, or in a child process under a memory limit; and a
/// scratch directory for this attempt (removed afterwards).
pub struct Preparation<'a> {
    pub sandbox: Option<&'a Sandbox>,
    pub scratch: PathBuf,
}

/// Removes the scratch directory however preparation ends.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Resolves and prepares everything a job trains on. Fails with a clear error when something is missing
/// or no usable example remains.
pub async fn prepare_inputs(
    registry: &Registry,
    job: &TrainingJob,
    device: DeviceSpec,
    preparation: Preparation<'_>,
    stop: Arc<AtomicBool>,
) -> Result<PreparedInputs, RunError> {
    let config =
        SftConfig::from_map(&job.config).map_err(|e| failed(format!("invalid job config: {e}")))?;
    let org = job.organization_id.as_str();
    let (model_id, job_config) = (job.model.clone(), config.clone());
    // The architecture and the memory it needs first: a model dn cannot train, or a job that cannot fit
    // this node, fails at once, by name, before any data is read or weights downloaded (a hub model's
    // `config.json` and tokenizer come first).
    let (model_path, model_config) = tokio::task::spawn_blocking(move || {
        let path =
            dn_model::resolve_model(&model_id, Need::Config, &mut ()).map_err(|e| e.to_string())?;
        let model_config = dn_train::BaseModel::read_config(&path).map_err(|e| e.to_string())?;
        check_memory(&model_config, &job_config, device, 1)?;
        Ok::<_, String>((path, model_config))
    })
    .await
    .map_err(|e| failed(format!("loading model {}: {e}", job.model)))?
    .map_err(failed)?;

    let cap = ArtifactRef::from_parts(&job.capability.name, &job.capability.version, "capability")
        .map_err(|e| failed(e.to_string()))?;
    let manifest = registry
        .capability(cap.org_or(org), &cap.name, &cap.version)
        .await
        .map_err(|e| registry_error(format!("capability {cap}"), e))?;
    if let Some(expected) = &job.capability.system_prompt_digest
        && expected != &manifest.system_prompt_digest
    {
        return Err(failed(format!(
            "capability {cap} changed since the job was created (system prompt {} != {expected})",
            manifest.system_prompt_digest
        )));
    }

    // The refs were checked when the job was created and again when its config was read back.
    let train_refs: Vec<&ArtifactRef> = config
        .dataset
        .iter()
        .chain(&config.trajectory_datasets)
        .collect();
    let eval_ref = config.eval_dataset.as_ref();

    let scratch = RemoveOnDrop(preparation.scratch.clone());
    let files_dir = scratch.0.join("files");
    tokio::fs::create_dir_all(&files_dir)
        .await
        .map_err(|e| RunError::transient(format!("cannot create {}: {e}", files_dir.display())))?;
    let mut train_files = Vec::new();
    for reference in train_refs {
        let first = train_files.len();
        train_files.extend(download_dataset(registry, org, reference, &files_dir, first).await?);
    }
    let mut groups = vec![train_files];
    if let Some(reference) = eval_ref {
        let first = groups[0].len();
        groups.push(download_dataset(registry, org, reference, &files_dir, first).await?);
    }
    // Templates that print today's date (Llama 3.x) render the job's creation date, so every attempt
    // of the job trains on the same tokens.
    let request = PrepareRequest {
        model_path,
        now: job.created_at.fixed_offset(),
        max_sequence_length: config.max_sequence_length as usize,
        system_prompt: manifest.system_prompt.clone(),
        train_on: config.extras.train_on,
        groups,
        eval_samples: config.extras.eval_samples as usize,
        max_conversations: None,
    };
    let mut prepared = match preparation.sandbox {
        Some(sandbox) => prepare_in_child(sandbox, &request, &scratch.0).await?,
        // The template's load probes render too: under the limit, in the child.
        None => tokio::task::spawn_blocking(move || {
            let model = load_model(&request)?;
            prepare_groups(&request, &model, &stop, &Unobserved)
        })
        .await
        .map_err(|e| failed(format!("preparing the data: {e}")))??,
    };
    drop(scratch);
    if let Some(limit) = prepared.iter().find_map(|g| g.template_limit.as_ref()) {
        return Err(failed(format!(
            "model {}: chat template: {limit}",
            job.model
        )));
    }
    let eval = (prepared.len() > 1).then(|| prepared.remove(1));
    let train = prepared.remove(0);
    let mut skipped_rows = train.skipped_rows;
    if train.examples.is_empty() {
        let first: Vec<String> = skipped_rows
            .iter()
            .map(|e| e.to_string())
            .chain(train.errors.iter().cloned())
            .take(5)
            .collect();
        return Err(failed(format!(
            "Training inputs did not produce any usable conversations: {} row(s) read, {} skipped, \
             {} failed to render, {} left with no supervised token. First errors: {}",
            train.rows_read,
            skipped_rows.len(),
            train.stats.failed,
            train.stats.dropped_no_supervised,
            if first.is_empty() {
                "none".to_owned()
            } else {
                first.join("; ")
            }
        )));
    }
    // Again with the longest example: its pass's activations must fit too.
    let longest = train
        .examples
        .iter()
        .chain(eval.iter().flat_map(|e| &e.examples))
        .map(|e| e.input_ids.len())
        .max()
        .unwrap_or(1);
    let job_config = config.clone();
    let family = model_config.family;
    tokio::task::spawn_blocking(move || check_memory(&model_config, &job_config, device, longest))
        .await
        .map_err(|e| failed(format!("memory check: {e}")))?
        .map_err(failed)?;
    let stop_ids = train.stop_ids;
    let (eval_examples, eval_stats, eval_samples) = match eval {
        Some(eval) => {
            skipped_rows.extend(eval.skipped_rows);
            (eval.examples, Some(eval.stats), eval.samples)
        }
        None => (Vec::new(), None, Vec::new()),
    };
    Ok(PreparedInputs {
        family,
        config,
        train: train.examples,
        train_stats: train.stats,
        eval: eval_examples,
        eval_stats,
        skipped_rows,
        eval_samples,
        stop_ids,
    })
}
