//! The dataset viewer's preview: the first rows of a dataset prepared exactly as a job prepares them
//! (downloaded to scratch, decoded, scaffolded, rendered and masked in the memory-limited child process
//! when a sandbox is given), then each token decoded alone with its supervision flag.

use std::path::Path;
use std::sync::atomic::AtomicBool;

use dn_registry::Registry;
use dn_render::TrainOn;
use dn_types::{DatasetManifest, DatasetPreview, PreviewExample, PreviewToken};

use crate::dataprep::{
    DataFile, PrepareRequest, PreparedGroup, Unobserved, load_model, prepare_groups,
};
use crate::sandbox::{Sandbox, prepare_in_child};

/// What to preview and how.
pub struct PreviewRequest<'a> {
    pub dataset: &'a DatasetManifest,
    /// The model as the catalog names it (a path or a hub id in the cache).
    pub model: &'a str,
    pub system_prompt: &'a str,
    pub limit: usize,
    pub max_sequence_length: usize,
    pub train_on: TrainOn,
}

/// Prepares the request's first group as a job would: in the memory-limited child process when a sandbox
/// is given (`scratch`: an empty directory the caller removes), else on a blocking thread here. For
/// previews (the API's and `dn data preview`'s).
pub async fn prepare_group(
    sandbox: Option<&Sandbox>,
    prepare: PrepareRequest,
    scratch: &Path,
) -> Result<PreparedGroup, String> {
    let groups = match sandbox {
        Some(sandbox) => prepare_in_child(sandbox, &prepare, scratch)
            .await
            .map_err(|e| e.to_string())?,
        None => tokio::task::spawn_blocking(move || {
            let model = load_model(&prepare)?;
            prepare_groups(&prepare, &model, &AtomicBool::new(false), &Unobserved)
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?,
    };
    groups
        .into_iter()
        .next()
        .ok_or_else(|| "preparation returned nothing".to_owned())
}

/// Prepares the first `limit` conversations of the dataset in `scratch` (an empty directory the caller
/// removes).
pub async fn preview_dataset(
    registry: &Registry,
    sandbox: Option<&Sandbox>,
    scratch: &Path,
    request: PreviewRequest<'_>,
) -> Result<DatasetPreview, String> {
    let model = request.model.to_owned();
    let model_path = tokio::task::spawn_blocking(move || dn_model::resolve_model_path(&model))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let manifest = request.dataset;
    let mut files = Vec::new();
    for (i, file) in manifest.data_files.iter().enumerate() {
        let dest = scratch.join(format!("file-{i}"));
        registry
            .download_dataset_file(manifest, file, &dest)
            .await
            .map_err(|e| format!("{}@{}/{file}: {e}", manifest.name, manifest.version))?;
        files.push(DataFile {
            label: format!("{}@{}/{file}", manifest.name, manifest.version),
            format: manifest.format,
            path: dest,
        });
    }
    let prepare = PrepareRequest {
        model_path: model_path.clone(),
        now: chrono::Utc::now().fixed_offset(),
        max_sequence_length: request.max_sequence_length,
        system_prompt: request.system_prompt.to_owned(),
        train_on: request.train_on,
        groups: vec![files],
        eval_samples: 0,
        max_conversations: Some(request.limit),
    };
    let group = prepare_group(sandbox, prepare, scratch).await?;
    if let Some(limit) = &group.template_limit {
        return Err(format!("chat template: {limit}"));
    }
    let tokenizer = tokio::task::spawn_blocking(move || dn_render::load_tokenizer(&model_path))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let mut examples = Vec::new();
    for example in &group.examples {
        let tokens = example
            .input_ids
            .iter()
            .zip(&example.loss_mask)
            .map(|(id, mask)| {
                Ok(PreviewToken {
                    text: tokenizer
                        .decode(&[*id], false)
                        .map_err(|e| format!("cannot decode token {id}: {e}"))?,
                    supervised: *mask == 1,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        examples.push(PreviewExample {
            num_tokens: tokens.len(),
            num_supervised: tokens.iter().filter(|t| t.supervised).count(),
            truncated: example.truncated,
            tokens,
        });
    }
    let mut notes = group.stats.system_notes();
    if group.stats.dropped_no_supervised > 0 {
        notes.push(format!(
            "{} conversation(s) dropped: no supervised token",
            group.stats.dropped_no_supervised
        ));
    }
    Ok(DatasetPreview {
        model: request.model.to_owned(),
        rows_read: group.rows_read,
        examples,
        skipped_rows: group.skipped_rows.iter().map(|e| e.to_string()).collect(),
        errors: group.errors,
        notes,
    })
}
