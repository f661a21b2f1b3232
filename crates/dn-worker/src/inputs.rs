//! A job's training inputs: the model's artifacts, the capability's system prompt, and every dataset row
//! normalized, scaffolded, rendered and masked, in a deterministic order (the dataset, then each trajectory
//! dataset in the order given; files in manifest order; rows in file order).

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use dn_data::{Conversation, Error as RowError, Format, load_conversations};
use dn_registry::Registry;
use dn_render::hub::Need;
use dn_render::{Example, ModelArtifacts, PrepareOptions, PrepareStats, TrainOn, prepare_until};
use dn_types::{ArtifactRef, DatasetRef, SftConfig, TrainingJob};
use serde_json::{Map, Value, json};

use crate::runner::RunError;
use crate::training::check_memory;

/// What the trainer consumes.
pub struct PreparedInputs {
    pub model: Arc<ModelArtifacts>,
    pub config: SftConfig,
    pub train: Vec<Example>,
    pub train_stats: PrepareStats,
    pub eval: Vec<Example>,
    pub eval_stats: Option<PrepareStats>,
    /// Rows that fit no shape, in order (file and row number in each).
    pub skipped_rows: Vec<RowError>,
}

impl PreparedInputs {
    /// The data counts for the job log.
    pub fn summary(&self) -> Map<String, Value> {
        let mut data = Map::new();
        data.insert("event".into(), "data_prepared".into());
        data.insert(
            "model_family".into(),
            self.model.family().map(|f| f.name()).into(),
        );
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
        dn_registry::Error::Storage(_) => RunError::transient(format!("{what}: {e}")),
        _ => failed(format!("{what}: {e}")),
    }
}

fn artifact_ref(r: &DatasetRef, field: &str) -> Result<ArtifactRef, RunError> {
    ArtifactRef::from_parts(&r.name, &r.version, field).map_err(|e| failed(e.to_string()))
}

/// Rows of one dataset version, normalized, with their row errors.
async fn dataset_conversations(
    registry: &Registry,
    org: &str,
    reference: &ArtifactRef,
) -> Result<(Vec<Conversation>, Vec<RowError>), RunError> {
    let owner = reference.org_or(org);
    let manifest = registry
        .dataset(owner, &reference.name, &reference.version)
        .await
        .map_err(|e| registry_error(format!("dataset {reference}"), e))?;
    let format = Format::parse(&manifest.format, &reference.to_string())
        .map_err(|e| failed(e.to_string()))?;
    let (mut conversations, mut errors) = (Vec::new(), Vec::new());
    for file in &manifest.data_files {
        let bytes = registry
            .dataset_file(&manifest, file)
            .await
            .map_err(|e| registry_error(format!("dataset {reference}"), e))?;
        let label = format!("{reference}/{file}");
        let loaded =
            tokio::task::spawn_blocking(move || load_conversations(&bytes, format, &label))
                .await
                .map_err(|e| failed(format!("reading dataset {reference}: {e}")))?
                .map_err(|e| failed(e.to_string()))?;
        conversations.extend(loaded.conversations);
        errors.extend(loaded.errors);
    }
    Ok((conversations, errors))
}

/// Resolves and prepares everything a job trains on. Fails with a clear error when something is missing
/// or no usable example remains.
pub async fn prepare_inputs(
    registry: &Registry,
    job: &TrainingJob,
    device: &str,
    stop: Arc<AtomicBool>,
) -> Result<PreparedInputs, RunError> {
    let config =
        SftConfig::from_map(&job.config).map_err(|e| failed(format!("job config: {e}")))?;
    let org = job.organization_id.as_str();
    let (model_id, device, job_config) = (job.model.clone(), device.to_owned(), config.clone());
    // The architecture and the memory it needs first: a model dn cannot train, or a job that cannot fit
    // this node, fails at once, by name, before any data is read or weights downloaded (a hub model's
    // `config.json` and tokenizer come first).
    let mut model = tokio::task::spawn_blocking(move || -> Result<ModelArtifacts, String> {
        let path = dn_render::resolve_model(&model_id, Need::Config, &mut ())
            .map_err(|e| e.to_string())?;
        let model_config = dn_train::BaseModel::read_config(&path).map_err(|e| e.to_string())?;
        check_memory(&model_config, &job_config, &device)?;
        ModelArtifacts::load(&path).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| failed(format!("loading model {}: {e}", job.model)))?
    .map_err(failed)?;
    // Templates that print today's date (Llama 3.x) render the job's creation date, so every attempt
    // of the job trains on the same tokens.
    model.template.set_now(job.created_at.fixed_offset());
    let model = Arc::new(model);

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

    let mut train_refs = Vec::new();
    if let Some(r) = &config.dataset_ref {
        train_refs.push(artifact_ref(r, "config.dataset_ref")?);
    }
    for (i, r) in config.trajectory_dataset_refs.iter().enumerate() {
        train_refs.push(artifact_ref(
            r,
            &format!("config.trajectory_dataset_refs[{i}]"),
        )?);
    }
    let (mut conversations, mut skipped_rows) = (Vec::new(), Vec::new());
    for reference in &train_refs {
        let (c, e) = dataset_conversations(registry, org, reference).await?;
        conversations.extend(c);
        skipped_rows.extend(e);
    }
    let train_on = TrainOn::parse(&config.extras.train_on).ok_or_else(|| {
        failed(format!(
            "job config: train_on {:?} is not one of {}",
            config.extras.train_on,
            TrainOn::NAMES.join(", ")
        ))
    })?;
    let options = PrepareOptions {
        max_sequence_length: config.max_sequence_length as usize,
        system_prompt: manifest.system_prompt.clone(),
        train_on,
    };
    let rows_read = conversations.len() + skipped_rows.len();
    let (prepared_model, prepared_options) = (model.clone(), options.clone());
    let train_stop = stop.clone();
    let train = tokio::task::spawn_blocking(move || {
        prepare_until(
            &prepared_model,
            conversations,
            &prepared_options,
            &train_stop,
        )
    })
    .await
    .map_err(|e| failed(format!("preparing training data: {e}")))?;
    if let Some(limit) = &train.template_limit {
        return Err(failed(format!(
            "model {}: chat template: {limit}",
            job.model
        )));
    }
    if train.examples.is_empty() {
        let first: Vec<String> = skipped_rows
            .iter()
            .map(|e| e.to_string())
            .chain(train.errors.iter().cloned())
            .take(5)
            .collect();
        return Err(failed(format!(
            "Training inputs did not produce any usable conversations: {rows_read} row(s) read, {} skipped, \
             {} failed to render, {} left with no supervised token. First errors: {}",
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

    let (eval, eval_stats) = match &config.eval_dataset_ref {
        Some(r) => {
            let reference = artifact_ref(r, "config.eval_dataset_ref")?;
            let (conversations, errors) = dataset_conversations(registry, org, &reference).await?;
            skipped_rows.extend(errors);
            let eval_model = model.clone();
            let eval_stop = stop.clone();
            let prepared = tokio::task::spawn_blocking(move || {
                prepare_until(&eval_model, conversations, &options, &eval_stop)
            })
            .await
            .map_err(|e| failed(format!("preparing eval data: {e}")))?;
            if let Some(limit) = &prepared.template_limit {
                return Err(failed(format!(
                    "model {}: chat template: {limit}",
                    job.model
                )));
            }
            (prepared.examples, Some(prepared.stats))
        }
        None => (Vec::new(), None),
    };
    Ok(PreparedInputs {
        model,
        config,
        train: train.examples,
        train_stats: train.stats,
        eval,
        eval_stats,
        skipped_rows,
    })
}
