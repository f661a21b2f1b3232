//! `--model` as users give it: a `.gguf` file, a local model directory, or a Hugging Face hub id
//! (`org/name[@revision]`) resolved through the hub cache, downloading what is missing (see [`crate::hub`]).

use std::path::{Path, PathBuf};

use hf_hub::api::Progress;

use crate::error::{Error, Result};
use crate::hub::{Hub, HubId, Need};

/// Where a model's files are on disk: what the data path reads (tokenizer, chat template, config).
pub fn resolve_model_path(model: &str) -> Result<PathBuf> {
    resolve_model(model, Need::Tokenizer, &mut ())
}

/// [`resolve_model_path`], and for a hub id also the weights, downloaded into the cache when missing
/// (after `config.json` showed an architecture dn can train): what training needs.
pub fn resolve_model_for_training(model: &str) -> Result<PathBuf> {
    resolve_model(model, Need::Weights, &mut ())
}

/// A local path as it is; a hub id's snapshot directory with what `need` asks for, reporting downloads to
/// `progress`.
pub fn resolve_model(model: &str, need: Need, progress: &mut dyn Progress) -> Result<PathBuf> {
    let path = Path::new(model);
    // `org/name` is a hub id, even where a relative path of that name exists (a job's relative path would
    // mean a directory of the worker's working directory; the CLI sends local paths absolute).
    let hub_shaped = !path.is_absolute() && HubId::parse(model).is_some();
    if !hub_shaped && path.exists() {
        return Ok(path.to_path_buf());
    }
    let id = HubId::parse(model).ok_or_else(|| Error::Model {
        path: model.to_owned(),
        message: "no such file or directory, and not a hub id (org/name or org/name@revision)"
            .into(),
    })?;
    Hub::from_env()?.fetch(&id, need, progress)
}
