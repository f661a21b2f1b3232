//! Hugging Face hub ids (`org/name`, optionally `@revision`) and fetching their files into the hub cache
//! (`HF_HUB_CACHE`, else `HF_HOME/hub`, else `~/.cache/huggingface/hub`, the layout transformers uses) from
//! the hub at `HF_ENDPOINT` (default huggingface.co) with `HF_TOKEN` (else the token file
//! `huggingface-cli login` writes). Files already cached are used without asking the hub anything; before the
//! first download the hub is probed with a short timeout, so a node without network or without access to a
//! gated model fails at once, naming the hub, the id, the cache and `HF_TOKEN`. A model's `config.json` comes
//! first and its architecture is checked before any weight file is requested. Downloads resume from their
//! `.part` file.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hf_hub::api::Progress;
use hf_hub::api::sync::{Api, ApiBuilder, ApiRepo};
use hf_hub::{Cache, Repo, RepoType};

use crate::error::{Error, Result};
use crate::model_files::{SHARD_INDEX, read_model_config, shard_names};

/// How long the probe before a download may take, connecting included.
const PROBE_TIMEOUT: Duration = Duration::from_secs(15);
/// The longest `org` or `name` the hub accepts.
const MAX_NAME_LEN: usize = 96;
const MAX_REVISION_LEN: usize = 128;
/// Fetched with the rest when the repo has them: transformers 5's template file, generation's eos ids.
const OPTIONAL_FILES: [&str; 3] = [
    "chat_template.jinja",
    "generation_config.json",
    "special_tokens_map.json",
];

/// A model on the hub: `org/name`, at a branch, tag or commit (`main` unless given as `org/name@revision`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubId {
    pub repo: String,
    pub revision: Option<String>,
}

impl HubId {
    /// `None` unless `model` is `org/name` or `org/name@revision` with the hub's characters.
    pub fn parse(model: &str) -> Option<HubId> {
        let (repo, revision) = match model.split_once('@') {
            Some((repo, revision)) => (repo, Some(revision)),
            None => (model, None),
        };
        let (org, name) = repo.split_once('/')?;
        let part_ok = |s: &str| {
            !s.is_empty()
                && s.len() <= MAX_NAME_LEN
                && !s.starts_with(['.', '-'])
                && !s.contains("..")
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        let revision_ok = |r: &str| {
            !r.is_empty()
                && r.len() <= MAX_REVISION_LEN
                && !r.starts_with(['.', '/', '-'])
                && !r.contains("..")
                && r.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
        };
        if !part_ok(org) || !part_ok(name) || !revision.is_none_or(revision_ok) {
            return None;
        }
        Some(HubId {
            repo: repo.to_owned(),
            revision: revision.map(str::to_owned),
        })
    }

    pub fn revision(&self) -> &str {
        self.revision.as_deref().unwrap_or("main")
    }

    fn hf_repo(&self) -> Repo {
        Repo::with_revision(
            self.repo.clone(),
            RepoType::Model,
            self.revision().to_owned(),
        )
    }
}

impl fmt::Display for HubId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.revision {
            Some(revision) => write!(f, "{}@{revision}", self.repo),
            None => f.write_str(&self.repo),
        }
    }
}

/// What a caller needs of a hub model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Need {
    /// The data path: tokenizer files and the chat template (`config.json` when the repo has one).
    Tokenizer,
    /// Also `config.json`, read and checked: an architecture dn cannot train is refused by name.
    Config,
    /// Also the safetensors weights (the shards `model.safetensors.index.json` names, or
    /// `model.safetensors`): what training and `dn model pull` need.
    Weights,
}

/// `HF_HUB_CACHE`, else `HF_HOME/hub`, else `~/.cache/huggingface/hub`.
pub fn hub_cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("HF_HUB_CACHE").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    if let Some(home) = std::env::var_os("HF_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(home).join("hub");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| ".".into());
    PathBuf::from(home).join(".cache/huggingface/hub")
}

/// The hub and the local cache, as the environment configures them.
pub struct Hub {
    api: Api,
    cache: Cache,
    endpoint: String,
    /// `HF_TOKEN`, else the token file's.
    token: Option<String>,
    offline: bool,
}

impl Hub {
    pub fn from_env() -> Result<Hub> {
        let cache_dir = hub_cache_dir();
        let endpoint = std::env::var("HF_ENDPOINT")
            .ok()
            .filter(|e| !e.is_empty())
            .unwrap_or_else(|| "https://huggingface.co".into())
            .trim_end_matches('/')
            .to_owned();
        // hf-hub reads the token file (`huggingface-cli login`); containers usually pass HF_TOKEN instead.
        let mut builder = ApiBuilder::from_env()
            .with_progress(false)
            .with_cache_dir(cache_dir.clone())
            .with_endpoint(endpoint.clone());
        let token = std::env::var("HF_TOKEN")
            .ok()
            .filter(|t| !t.is_empty())
            .or_else(|| Cache::new(cache_dir.clone()).token());
        builder = builder.with_token(token.clone());
        let api = builder.build().map_err(|e| Error::Model {
            path: cache_dir.display().to_string(),
            message: format!("cannot use the Hugging Face hub cache: {e}"),
        })?;
        let offline =
            std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| matches!(v.trim(), "1" | "true"));
        Ok(Hub {
            api,
            cache: Cache::new(cache_dir),
            endpoint,
            token,
            offline,
        })
    }

    pub fn cache_dir(&self) -> &Path {
        self.cache.path()
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The snapshot directory of `id` with what `need` asks for, downloading what the cache lacks.
    pub fn fetch(&self, id: &HubId, need: Need, progress: &mut dyn Progress) -> Result<PathBuf> {
        let mut fetch = Fetch {
            hub: self,
            id,
            repo: self.api.repo(id.hf_repo()),
            probed: false,
            downloaded: false,
            progress,
        };
        fetch.run(need)
    }

    fn error(&self, id: &HubId, message: String) -> Error {
        Error::Model {
            path: id.to_string(),
            message,
        }
    }

    fn cached(&self, id: &HubId, file: &str) -> Option<PathBuf> {
        self.cache.repo(id.hf_repo()).get(file)
    }

    /// Asks the hub for the first bytes of `file` with a short timeout: a hub that cannot be reached, a
    /// gated or private model without a token, a missing repo, revision or file are errors saying so.
    fn probe(&self, id: &HubId, file: &str) -> Result<()> {
        let url = self.api.repo(id.hf_repo()).url(file);
        let mut request = ureq::get(&url)
            .set("Range", "bytes=0-0")
            .timeout(PROBE_TIMEOUT);
        if let Some(token) = &self.token {
            request = request.set("Authorization", &format!("Bearer {token}"));
        }
        let response = request.call();
        let cache = self.cache_dir().display();
        let endpoint = &self.endpoint;
        let token = if self.token.is_some() {
            "the token in HF_TOKEN (or the token file) has no access to it: accept the model's terms on \
             its hub page with that account, or use a token that has access"
        } else {
            "no token is set: set HF_TOKEN to a token with access (accept the model's terms on its hub \
             page first)"
        };
        match response {
            Ok(_) => Ok(()),
            Err(ureq::Error::Status(status, response)) => {
                let code = response.header("x-error-code").unwrap_or("").to_owned();
                let message = match (status, code.as_str()) {
                    (_, "GatedRepo") | (401 | 403, _) => format!(
                        "the hub at {endpoint} refused access (HTTP {status}{}): the model is gated or \
                         private, or does not exist; {token}",
                        if code.is_empty() { String::new() } else { format!(", {code}") }
                    ),
                    (_, "RevisionNotFound") => format!(
                        "revision '{}' does not exist on the hub at {endpoint}",
                        id.revision()
                    ),
                    (404, _) => format!(
                        "the hub at {endpoint} has no {file} for it at revision '{}' (HTTP 404{}): check \
                         the id and revision",
                        id.revision(),
                        if code.is_empty() { String::new() } else { format!(", {code}") }
                    ),
                    _ => format!("the hub at {endpoint} answered HTTP {status} for {file}"),
                };
                Err(self.error(id, format!("{message} (hub cache: {cache})")))
            }
            Err(e) => Err(self.error(
                id,
                format!(
                    "not in the hub cache ({cache}) and the hub at {endpoint} cannot be reached ({e}); \
                     without network, fill the cache where the hub is reachable (`dn model pull {id}`, \
                     then copy {cache}); set HF_ENDPOINT for a mirror and HF_TOKEN for gated models"
                ),
            )),
        }
    }
}

/// One `Hub::fetch`: probes the hub before its first download only; optional files are asked for only
/// when something had to be downloaded (a cached model needs no network).
struct Fetch<'a> {
    hub: &'a Hub,
    id: &'a HubId,
    repo: ApiRepo,
    probed: bool,
    downloaded: bool,
    progress: &'a mut dyn Progress,
}

impl Fetch<'_> {
    fn run(&mut self, need: Need) -> Result<PathBuf> {
        if need >= Need::Config {
            let path = self.required(
                "config.json",
                "the model's architecture; dn reads it before any weights",
            )?;
            // An architecture dn cannot train is refused by name before anything else is fetched.
            let dir = path.parent().unwrap_or(Path::new(""));
            read_model_config(dir).map_err(|m| self.hub.error(self.id, m))?;
        }
        let mut dir = None;
        for file in ["tokenizer.json", "tokenizer_config.json"] {
            let path = self.required(file, "the tokenizer")?;
            dir = path.parent().map(Path::to_path_buf);
        }
        if need == Need::Tokenizer {
            self.optional("config.json")?;
        }
        if need == Need::Weights {
            self.weights()?;
        }
        for file in OPTIONAL_FILES {
            self.optional(file)?;
        }
        dir.ok_or_else(|| {
            self.hub
                .error(self.id, "the hub cache returned no directory".into())
        })
    }

    /// A cached file, else downloaded when this fetch downloads anyway; `None` when the hub lacks it.
    fn optional(&mut self, file: &str) -> Result<Option<PathBuf>> {
        if let Some(path) = self.hub.cached(self.id, file) {
            return Ok(Some(path));
        }
        if !self.downloaded || self.hub.offline {
            return Ok(None);
        }
        Ok(self.download(file).ok())
    }

    fn required(&mut self, file: &str, what: &str) -> Result<PathBuf> {
        if let Some(path) = self.hub.cached(self.id, file) {
            return Ok(path);
        }
        let cache = self.hub.cache_dir().display().to_string();
        if self.hub.offline {
            return Err(self.hub.error(
                self.id,
                format!(
                    "{file} ({what}) is not in the hub cache ({cache}) and HF_HUB_OFFLINE is set"
                ),
            ));
        }
        if !self.probed {
            self.hub.probe(self.id, file)?;
            self.probed = true;
        }
        self.download(file).map_err(|e| {
            self.hub.error(
                self.id,
                format!(
                    "{file} ({what}) is not in the hub cache ({cache}) and could not be downloaded \
                     from {}: {e}",
                    self.hub.endpoint
                ),
            )
        })
    }

    fn download(
        &mut self,
        file: &str,
    ) -> std::result::Result<PathBuf, hf_hub::api::sync::ApiError> {
        let path = self
            .repo
            .download_with_progress(file, DynProgress(&mut *self.progress))?;
        self.downloaded = true;
        Ok(path)
    }

    /// The shards the index names, or `model.safetensors`.
    fn weights(&mut self) -> Result<()> {
        const WHAT: &str =
            "the weights; a GGUF-only repo: download its .gguf and pass the file's path";
        if self.hub.cached(self.id, "model.safetensors").is_some() {
            return Ok(());
        }
        let index = match self.hub.cached(self.id, SHARD_INDEX) {
            Some(index) => Some(index),
            None if self.hub.offline => None,
            None => {
                if !self.probed {
                    self.hub.probe(self.id, "config.json")?;
                    self.probed = true;
                }
                self.download(SHARD_INDEX).ok()
            }
        };
        let shards = match index {
            Some(index) => shard_names(&index).map_err(|m| self.hub.error(self.id, m))?,
            None => vec!["model.safetensors".to_owned()],
        };
        for shard in &shards {
            self.required(shard, WHAT)?;
        }
        Ok(())
    }
}

/// A `&mut dyn Progress` passed where hf-hub wants a `Progress` by value.
struct DynProgress<'a>(&'a mut dyn Progress);

impl Progress for DynProgress<'_> {
    fn init(&mut self, size: usize, filename: &str) {
        self.0.init(size, filename);
    }
    fn update(&mut self, size: usize) {
        self.0.update(size);
    }
    fn finish(&mut self) {
        self.0.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_ids_with_and_without_revisions() {
        let id = HubId::parse("Qwen/Qwen3-0.6B").unwrap();
        assert_eq!(
            (id.repo.as_str(), id.revision()),
            ("Qwen/Qwen3-0.6B", "main")
        );
        let id = HubId::parse("meta-llama/Llama-3.1-8B-Instruct@0e9e39f").unwrap();
        assert_eq!(id.revision(), "0e9e39f");
        assert_eq!(id.to_string(), "meta-llama/Llama-3.1-8B-Instruct@0e9e39f");
        assert_eq!(
            HubId::parse("a/b@refs/pr/1").unwrap().revision(),
            "refs/pr/1"
        );
        for bad in [
            "llama", "a/b/c", "../b", "a/..", "a/b@", "a/b@../x", "/b", "a/", "a b/c", "-a/b",
            "a/b@/x", "./model",
        ] {
            assert_eq!(HubId::parse(bad), None, "{bad}");
        }
        assert_eq!(HubId::parse(&format!("a/{}", "x".repeat(97))), None);
    }
}
