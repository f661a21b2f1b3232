//! `--model` as users give it: a `.gguf` file, a local model directory, or a Hugging Face hub id resolved
//! through the hub cache (`HF_HUB_CACHE`, else `HF_HOME/hub`, else `~/.cache/huggingface/hub`): offline when
//! the files are cached, downloaded when the hub is reachable.

use std::path::{Path, PathBuf};

use hf_hub::api::sync::ApiBuilder;

use crate::artifacts::ModelArtifacts;
use crate::error::{Error, Result};

/// The files the data path reads from a hub repo; `config.json` is optional.
const REQUIRED_FILES: [&str; 2] = ["tokenizer.json", "tokenizer_config.json"];

/// Where a model's files are on disk.
pub fn resolve_model_path(model: &str) -> Result<PathBuf> {
    let path = Path::new(model);
    if path.exists() {
        return Ok(path.to_path_buf());
    }
    let looks_like_hub_id =
        model.split('/').count() == 2 && !model.starts_with('.') && !model.contains("..");
    if !looks_like_hub_id {
        return Err(Error::Model {
            path: model.to_owned(),
            message: "no such file or directory, and not a hub id (org/name)".into(),
        });
    }
    let mut builder = ApiBuilder::from_env().with_progress(false);
    if let Ok(cache) = std::env::var("HF_HUB_CACHE") {
        builder = builder.with_cache_dir(PathBuf::from(cache));
    }
    let api = builder.build().map_err(|e| Error::Model {
        path: model.to_owned(),
        message: format!("cannot use the Hugging Face hub cache: {e}"),
    })?;
    let repo = api.model(model.to_owned());
    let mut dir = None;
    for file in REQUIRED_FILES {
        let local = repo.get(file).map_err(|e| Error::Model {
            path: model.to_owned(),
            message: format!(
                "{file} is not in the local hub cache and could not be downloaded: {e}"
            ),
        })?;
        dir = local.parent().map(Path::to_path_buf);
    }
    let _ = repo.get("config.json");
    dir.ok_or_else(|| Error::Model {
        path: model.to_owned(),
        message: "the hub cache returned no directory".into(),
    })
}

impl ModelArtifacts {
    /// Loads `--model`: a `.gguf` file, a model directory, or a hub id (see [`resolve_model_path`]).
    pub fn resolve(model: &str) -> Result<Self> {
        ModelArtifacts::load(&resolve_model_path(model)?)
    }
}
