//! Dataset files -> training examples: decode each file (JSONL, JSON, CSV, Parquet), normalize its rows,
//! then scaffold, render, tokenize and mask them with the model's chat template. Everything here reads
//! what users pushed, so a worker can run it in a child process (`sandbox`) under a memory limit; the
//! same function runs in-process where no limit is asked for.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use chrono::{DateTime, FixedOffset};
use dn_data::{Error as RowError, Format, load_first_conversations};
use dn_render::{
    EvalPrompt, Example, ModelArtifacts, PrepareOptions, PrepareStats, TrainOn, eval_prompt,
    prepare_observed,
};
use serde::{Deserialize, Serialize};

use crate::runner::{Fault, RunError};

/// One dataset file: its name in errors (`name@version/path`), its format, where its bytes are.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DataFile {
    pub label: String,
    pub format: Format,
    pub path: PathBuf,
}

/// Everything preparation needs, as plain data (a child process reads it from a file).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PrepareRequest {
    /// A local model directory or file (a hub model is resolved before).
    pub model_path: PathBuf,
    /// What `strftime_now` returns: the job's creation time.
    pub now: DateTime<FixedOffset>,
    pub max_sequence_length: usize,
    pub system_prompt: String,
    pub train_on: TrainOn,
    /// Prepared one group after the other (the training files, then the eval files).
    pub groups: Vec<Vec<DataFile>>,
    /// Eval conversations (of the second group) also made into generation prompts.
    #[serde(default)]
    pub eval_samples: usize,
    /// Render only the first this many conversations of each group (the dataset viewer's preview).
    #[serde(default)]
    pub max_conversations: Option<usize>,
}

/// What one group of files became.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct PreparedGroup {
    #[serde(skip)]
    pub examples: Vec<Example>,
    pub stats: PrepareStats,
    /// Conversations the template could not render or mask, one message each.
    pub errors: Vec<String>,
    /// Rows that fit no shape (file and row in each).
    pub skipped_rows: Vec<RowError>,
    /// The chat template ran past a limit; the rest was not rendered.
    pub template_limit: Option<String>,
    /// Rows read from the files: conversations and skipped rows.
    pub rows_read: usize,
    /// Up to `eval_samples` conversations cut before their last assistant turn (eval group only).
    #[serde(default)]
    pub samples: Vec<EvalPrompt>,
    /// The ids that end an assistant turn.
    #[serde(default)]
    pub stop_ids: Vec<u32>,
    /// The model's `model_type` (config.json, or the GGUF's architecture), and the family dn trains it as.
    #[serde(default)]
    pub model_type: Option<String>,
    #[serde(default)]
    pub family: Option<String>,
}

/// Where preparation is: what a supervisor reports if the process running it dies.
pub trait Observer: Sync {
    /// The model's tokenizer and chat template are about to be loaded (the template is probed).
    fn loading_model(&self) {}
    /// A file is about to be decoded.
    fn reading(&self, file: &DataFile);
    /// The conversation from `row` of `file` (number `index` of its group) starts (`started`) or ends
    /// rendering.
    fn rendering(&self, index: usize, file: &str, row: usize, started: bool);
}

/// Observes nothing (in-process preparation).
pub struct Unobserved;

impl Observer for Unobserved {
    fn reading(&self, _: &DataFile) {}
    fn rendering(&self, _: usize, _: &str, _: usize, _: bool) {}
}

/// Why preparation failed, and whose fault that is (see [`Fault`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct PrepareFailure {
    pub message: String,
    pub fault: Fault,
}

impl PrepareFailure {
    fn input(message: impl Into<String>) -> Self {
        PrepareFailure {
            message: message.into(),
            fault: Fault::Input,
        }
    }
}

impl From<PrepareFailure> for RunError {
    fn from(failure: PrepareFailure) -> Self {
        RunError::of(failure.message, failure.fault)
    }
}

/// The model's tokenizer and template, as preparation uses them.
pub fn load_model(request: &PrepareRequest) -> Result<ModelArtifacts, PrepareFailure> {
    let mut model = ModelArtifacts::load(&request.model_path)
        .map_err(|e| PrepareFailure::input(e.to_string()))?;
    model.template.set_now(request.now);
    Ok(model)
}

/// The first `eval_samples` conversations that end with an assistant turn and whose prompt fits in
/// `max_sequence_length`, as generation prompts (one the template cannot render is passed over).
fn eval_prompts(
    model: &ModelArtifacts,
    conversations: &[dn_data::Conversation],
    request: &PrepareRequest,
) -> Vec<EvalPrompt> {
    conversations
        .iter()
        .filter_map(|c| eval_prompt(model, c, &request.system_prompt)?.ok())
        .filter(|p| p.prompt_ids.len() < request.max_sequence_length)
        .take(request.eval_samples)
        .collect()
}

/// A downloaded file's bytes, mapped rather than read: rows are decoded as they are asked for, so a
/// preview that stops after a few rows loads only the pages it touched.
fn map_file(file: &DataFile) -> Result<FileBytes, PrepareFailure> {
    let cannot = |e: std::io::Error| PrepareFailure {
        message: format!("{}: cannot read the downloaded copy: {e}", file.label),
        fault: Fault::of_io(&e),
    };
    let handle = std::fs::File::open(&file.path).map_err(cannot)?;
    if handle.metadata().map_err(cannot)?.len() == 0 {
        return Ok(FileBytes::Empty);
    }
    // SAFETY: the file is this process's own scratch copy, written before preparation starts and not
    // changed while it is mapped.
    let map = unsafe { memmap2::Mmap::map(&handle) }.map_err(cannot)?;
    Ok(FileBytes::Mapped(map))
}

/// A dataset file's content (a zero-length file cannot be mapped).
enum FileBytes {
    Empty,
    Mapped(memmap2::Mmap),
}

impl std::ops::Deref for FileBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            FileBytes::Empty => &[],
            FileBytes::Mapped(map) => map,
        }
    }
}

/// Prepares every group. `Err` is a file that cannot be read at all (the job's input is unusable).
pub fn prepare_groups(
    request: &PrepareRequest,
    model: &ModelArtifacts,
    stop: &AtomicBool,
    observer: &dyn Observer,
) -> Result<Vec<PreparedGroup>, PrepareFailure> {
    let options = PrepareOptions {
        max_sequence_length: request.max_sequence_length,
        system_prompt: request.system_prompt.clone(),
        train_on: request.train_on,
    };
    let mut groups = Vec::new();
    for (group, files) in request.groups.iter().enumerate() {
        let (mut conversations, mut sources, mut skipped_rows) = (Vec::new(), Vec::new(), vec![]);
        let limit = request.max_conversations.unwrap_or(usize::MAX);
        for (file_index, file) in files.iter().enumerate() {
            if conversations.len() >= limit {
                break;
            }
            observer.reading(file);
            // An unreadable format (arrow) was refused before the download; the reader refuses it too.
            let bytes = map_file(file)?;
            let loaded = load_first_conversations(
                &bytes,
                file.format,
                &file.label,
                limit - conversations.len(),
            )
            .map_err(|e| PrepareFailure::input(e.to_string()))?;
            drop(bytes);
            conversations.extend(loaded.conversations);
            sources.extend(loaded.rows.into_iter().map(|row| (file_index, row)));
            skipped_rows.extend(loaded.errors);
        }
        let rows_read = conversations.len() + skipped_rows.len();
        let samples = if group == 1 {
            eval_prompts(model, &conversations, request)
        } else {
            Vec::new()
        };
        let observe = |index: usize, started: bool| {
            if let Some((file, row)) = sources.get(index) {
                observer.rendering(index, &files[*file].label, *row, started);
            }
        };
        let prepared = prepare_observed(model, conversations, &options, stop, &observe);
        let limited = prepared.template_limit.is_some();
        groups.push(PreparedGroup {
            examples: prepared.examples,
            stats: prepared.stats,
            errors: prepared.errors,
            skipped_rows,
            template_limit: prepared.template_limit,
            rows_read,
            samples,
            stop_ids: model.stop_ids(),
            model_type: model.model_type.clone(),
            family: model.family().map(|f| f.to_string()),
        });
        if limited {
            break;
        }
    }
    Ok(groups)
}
