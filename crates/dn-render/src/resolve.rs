//! `--model` as users give it: a `.gguf` file, a local model directory, or a Hugging Face hub id resolved
//! through the hub cache (`HF_HUB_CACHE`, else `HF_HOME/hub`, else `~/.cache/huggingface/hub`): offline when
//! the files are cached, downloaded when the hub is reachable (`HF_ENDPOINT`, token from `HF_TOKEN` or the
//! token file). Training also fetches the weights.

use std::path::{Path, PathBuf};

use hf_hub::api::sync::ApiBuilder;

use crate::artifacts::ModelArtifacts;
use crate::error::{Error, Result};

/// The files the data path reads from a hub repo; `config.json` is optional.
const REQUIRED_FILES: [&str; 2] = ["tokenizer.json", "tokenizer_config.json"];

/// Where a model's files are on disk: what the data path reads (tokenizer, chat template, config).
pub fn resolve_model_path(model: &str) -> Result<PathBuf> {
    resolve(model, false)
}

/// [`resolve_model_path`], and for a hub id also the weights (the shards `model.safetensors.index.json`
/// names, or `model.safetensors`), downloaded into the cache when missing: what training needs.
pub fn resolve_model_for_training(model: &str) -> Result<PathBuf> {
    resolve(model, true)
}

fn resolve(model: &str, weights: bool) -> Result<PathBuf> {
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
    let model_error = |message: String| Error::Model {
        path: model.to_owned(),
        message,
    };
    let mut builder = ApiBuilder::from_env().with_progress(false);
    if let Ok(cache) = std::env::var("HF_HUB_CACHE") {
        builder = builder.with_cache_dir(PathBuf::from(cache));
    }
    // hf-hub reads the token file (`huggingface-cli login`); containers usually pass HF_TOKEN instead.
    if let Ok(token) = std::env::var("HF_TOKEN")
        && !token.is_empty()
    {
        builder = builder.with_token(Some(token));
    }
    let api = builder
        .build()
        .map_err(|e| model_error(format!("cannot use the Hugging Face hub cache: {e}")))?;
    let cache = match std::env::var("HF_HUB_CACHE") {
        Ok(dir) => hf_hub::Cache::new(PathBuf::from(dir)),
        Err(_) => hf_hub::Cache::from_env(),
    };
    // A repo whose files are all cached already resolves without asking the hub anything.
    let fresh = REQUIRED_FILES
        .iter()
        .any(|f| cache.model(model.to_owned()).get(f).is_none());
    let repo = api.model(model.to_owned());
    let mut dir = None;
    for file in REQUIRED_FILES {
        let local = repo.get(file).map_err(|e| {
            model_error(format!(
                "{file} is not in the local hub cache and could not be downloaded: {e}"
            ))
        })?;
        dir = local.parent().map(Path::to_path_buf);
    }
    let _ = repo.get("config.json");
    // Optional, fetched with the rest: transformers 5's template file, generation's eos ids.
    if fresh {
        for optional in ["chat_template.jinja", "generation_config.json"] {
            let _ = repo.get(optional);
        }
    }
    if weights {
        fetch_weights(&repo).map_err(model_error)?;
    }
    dir.ok_or_else(|| model_error("the hub cache returned no directory".into()))
}

/// The safetensors weights of a hub repo, into the cache (each file downloaded unless cached).
fn fetch_weights(repo: &hf_hub::api::sync::ApiRepo) -> std::result::Result<(), String> {
    const INDEX: &str = "model.safetensors.index.json";
    let shards = match repo.get(INDEX) {
        Ok(index) => {
            let text = std::fs::read_to_string(&index)
                .map_err(|e| format!("cannot read {}: {e}", index.display()))?;
            let parsed: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| format!("{INDEX}: {e}"))?;
            let mut shards: Vec<String> = parsed["weight_map"]
                .as_object()
                .ok_or_else(|| format!("{INDEX}: no weight_map"))?
                .values()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect();
            shards.sort();
            shards.dedup();
            shards
        }
        Err(_) => vec!["model.safetensors".to_owned()],
    };
    for shard in &shards {
        if shard.contains('/') || shard.starts_with('.') {
            return Err(format!("{INDEX}: unexpected shard name {shard:?}"));
        }
        repo.get(shard).map_err(|e| {
            format!(
                "{shard} (the weights) is not in the local hub cache and could not be downloaded: \
                 {e} (a GGUF-only repo: download its .gguf and pass the file's path)"
            )
        })?;
    }
    Ok(())
}

impl ModelArtifacts {
    /// Loads `--model`: a `.gguf` file, a model directory, or a hub id (see [`resolve_model_path`]).
    pub fn resolve(model: &str) -> Result<Self> {
        ModelArtifacts::load(&resolve_model_path(model)?)
    }
}
