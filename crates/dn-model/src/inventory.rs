//! The models a node has, described from their files without loading weights: what `dn model list`
//! prints and what the server's catalog serves. Family, parameter count and context length come from the
//! model's `config.json` (or a GGUF's metadata) read as the trainer reads it (`dn-arch`), so a model of an
//! architecture dn cannot train is listed with the reason.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::gguf::GgufMetadata;
use crate::hub::{HubId, hub_cache_dir};
use crate::model_files::{SHARD_INDEX, read_json, shard_names};

/// Most entries a directory scan reads (hub cache repos, local model directories, files of a model).
const MAX_SCAN: usize = 1000;
/// The largest safetensors header read for its dtype.
const MAX_HEADER_BYTES: u64 = 16 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModelSource {
    /// Named in the deployment's configuration.
    Catalog,
    /// A model directory or GGUF file under the data directory's `models/`.
    Local,
    /// A snapshot in the Hugging Face hub cache.
    HubCache,
}

/// One model as `dn model list` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ModelInfo {
    /// What `--model` takes: the hub id, or the path.
    pub id: String,
    pub source: ModelSource,
    pub path: PathBuf,
    pub display_name: String,
    pub family: Option<String>,
    pub parameters: Option<u64>,
    /// A mixture of experts' parameters one token computes with (the experts it is not routed to left
    /// out); `None` for a dense model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub active_parameters: Option<u64>,
    pub context_length: Option<u64>,
    /// The weights' dtype (config.json's `dtype`/`torch_dtype`, else the first tensor's; a bitsandbytes
    /// checkpoint's 4-bit format; a GGUF's most
    /// common tensor type).
    pub dtype: Option<String>,
    pub size_bytes: u64,
    pub trainable: bool,
    /// The architecture and weight types are ones dn trains (files may still be missing).
    #[serde(skip)]
    pub supported: bool,
    /// Why not, when it is not (or what is missing but fetched on first use).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl ModelInfo {
    /// Billions of parameters, to three decimals (the catalog's `size_b`).
    pub fn size_b(&self) -> f64 {
        self.parameters.map_or(0.0, billions)
    }

    /// Billions of active parameters of a mixture of experts, to three decimals.
    pub fn active_size_b(&self) -> Option<f64> {
        self.active_parameters.map(billions)
    }
}

fn billions(n: u64) -> f64 {
    (n as f64 / 1e9 * 1000.0).round() / 1000.0
}

/// Describes `path` (a model directory or `.gguf` file) listed as `id`.
pub fn describe_model(id: &str, path: &Path, source: ModelSource) -> ModelInfo {
    let display_name = if path.is_dir() && source != ModelSource::HubCache {
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| id.to_owned())
    } else {
        id.rsplit('/').next().unwrap_or(id).to_owned()
    };
    let mut info = ModelInfo {
        id: id.to_owned(),
        source,
        path: path.to_path_buf(),
        display_name,
        family: None,
        parameters: None,
        active_parameters: None,
        context_length: None,
        dtype: None,
        size_bytes: 0,
        trainable: false,
        supported: false,
        reason: None,
    };
    if path.is_file() {
        describe_gguf(&mut info, path);
    } else {
        describe_dir(&mut info, path);
    }
    info
}

fn describe_dir(info: &mut ModelInfo, dir: &Path) {
    info.size_bytes = dir_size(dir);
    let config_path = dir.join("config.json");
    let json = match read_json(&config_path) {
        Ok(json) => json,
        Err(e) => {
            info.reason = Some(e);
            return;
        }
    };
    info.dtype = ["dtype", "torch_dtype"]
        .iter()
        .find_map(|k| json[*k].as_str().map(str::to_owned))
        .or_else(|| json["text_config"]["dtype"].as_str().map(str::to_owned));
    match dn_arch::ModelConfig::from_json(&json, &config_path.display().to_string()) {
        Ok(config) => {
            info.family = Some(config.family.name().to_owned());
            info.parameters = Some(config.parameter_count());
            info.active_parameters = config
                .experts
                .is_some()
                .then(|| config.active_parameter_count());
            info.context_length = Some(config.max_position_embeddings as u64);
            info.supported = true;
            // A bitsandbytes checkpoint's linears are 4-bit whatever the dtype the rest is in.
            if let Some(q @ dn_arch::StoredQuantization::Bnb4 { .. }) = config.quantization {
                info.dtype = Some(q.to_string());
            }
        }
        Err(e) => {
            info.family = json["model_type"].as_str().map(str::to_owned);
            info.reason = Some(e.to_string());
            return;
        }
    }
    let missing = missing_files(dir);
    if info.dtype.is_none() {
        info.dtype = first_safetensors_dtype(dir);
    }
    match missing {
        None => info.trainable = true,
        Some(what) if info.source == ModelSource::HubCache => {
            // The worker fetches what is missing; say so.
            info.trainable = true;
            info.reason = Some(format!(
                "{what} not downloaded yet (`dn model pull {}`)",
                info.id
            ));
        }
        Some(what) => info.reason = Some(format!("{what} missing in {}", dir.display())),
    }
}

/// What training needs of a model directory that is not there: the tokenizer, or weights.
fn missing_files(dir: &Path) -> Option<String> {
    for file in ["tokenizer.json", "tokenizer_config.json"] {
        if !dir.join(file).is_file() {
            return Some(file.to_owned());
        }
    }
    let index = dir.join(SHARD_INDEX);
    if index.is_file() {
        return match shard_names(&index) {
            Ok(shards) => {
                let absent = shards.iter().filter(|s| !dir.join(s).is_file()).count();
                (absent > 0).then(|| format!("{absent} of {} weight shards", shards.len()))
            }
            Err(e) => Some(e),
        };
    }
    (!dir.join("model.safetensors").is_file()).then(|| "the weights (model.safetensors)".into())
}

fn describe_gguf(info: &mut ModelInfo, path: &Path) {
    info.size_bytes = std::fs::metadata(path).map_or(0, |m| m.len());
    let described = (|| -> Result<(), String> {
        let meta = GgufMetadata::read(path).map_err(|e| e.to_string())?;
        info.parameters = Some(meta.tensors.iter().map(|t| t.elements()).sum());
        info.context_length = meta.arch_u64("context_length");
        if let Some(name) = meta.str("general.name") {
            info.display_name = name.to_owned();
        }
        info.dtype = most_common_type(&meta);
        let name = path.display().to_string();
        let json = crate::hf_config(&meta, &name).map_err(|e| e.to_string())?;
        let config = dn_arch::ModelConfig::from_json(&json, &name).map_err(|e| e.to_string())?;
        info.family = Some(config.family.name().to_owned());
        if let Some(t) = meta
            .tensors
            .iter()
            .find(|t| crate::weights::tensor_bytes(t).is_err())
        {
            return Err(format!(
                "tensor {} has ggml type {}, which dn cannot dequantize ({})",
                t.name,
                t.kind,
                crate::ggml::GgmlType::names()
            ));
        }
        Ok(())
    })();
    match described {
        Ok(()) => {
            info.trainable = true;
            info.supported = true;
        }
        Err(e) => info.reason = Some(e),
    }
}

fn most_common_type(meta: &GgufMetadata) -> Option<String> {
    let mut counts = std::collections::BTreeMap::<u32, usize>::new();
    for t in &meta.tensors {
        *counts.entry(t.kind).or_default() += t.elements() as usize;
    }
    let (kind, _) = counts.into_iter().max_by_key(|(_, n)| *n)?;
    Some(
        match kind {
            0 => "F32",
            1 => "F16",
            2 => "Q4_0",
            3 => "Q4_1",
            8 => "Q8_0",
            30 => "BF16",
            _ => return Some(format!("ggml type {kind}")),
        }
        .to_owned(),
    )
}

/// The dtype of the first tensor in the first safetensors file's header.
fn first_safetensors_dtype(dir: &Path) -> Option<String> {
    let file = if dir.join("model.safetensors").is_file() {
        dir.join("model.safetensors")
    } else {
        list_dir(dir)
            .into_iter()
            .find(|p| p.extension().is_some_and(|e| e == "safetensors"))?
    };
    use std::io::Read;
    let mut f = std::fs::File::open(file).ok()?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len).ok()?;
    let len = u64::from_le_bytes(len).min(MAX_HEADER_BYTES);
    let mut header = vec![0u8; len as usize];
    f.read_exact(&mut header).ok()?;
    let header: serde_json::Value = serde_json::from_slice(&header).ok()?;
    header
        .as_object()?
        .iter()
        .find(|(k, _)| *k != "__metadata__")
        .and_then(|(_, v)| v["dtype"].as_str().map(str::to_owned))
}

/// The files and directories in `dir`, sorted, at most [`MAX_SCAN`].
fn list_dir(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .take(MAX_SCAN)
        .collect();
    paths.sort();
    paths
}

/// Bytes of the files directly in `dir` (hub snapshots link to blobs: the blobs' sizes).
fn dir_size(dir: &Path) -> u64 {
    list_dir(dir)
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

/// Every model in the hub cache (`main`'s snapshot, else the newest), at most [`MAX_SCAN`].
pub fn hub_cache_models(cache: &Path) -> Vec<ModelInfo> {
    list_dir(cache)
        .iter()
        .filter_map(|repo| {
            let name = repo.file_name()?.to_str()?.strip_prefix("models--")?;
            let (org, model) = name.split_once("--")?;
            hub_cache_model(cache, &HubId::parse(&format!("{org}/{model}"))?)
        })
        .collect()
}

/// One hub model in the cache, at its revision (`main`'s snapshot, else the newest, when none is given);
/// `None` when the cache has no snapshot of it.
pub fn hub_cache_model(cache: &Path, id: &HubId) -> Option<ModelInfo> {
    let repo = cache.join(format!("models--{}", id.repo.replace('/', "--")));
    let snapshots = repo.join("snapshots");
    let commit = std::fs::read_to_string(repo.join("refs").join(id.revision()))
        .map(|c| c.trim().to_owned())
        .ok()
        .filter(|c| !c.is_empty() && c.chars().all(|c| c.is_ascii_alphanumeric()));
    let snapshot = match commit {
        Some(commit) => Some(snapshots.join(commit)),
        // A revision given as a commit is its own snapshot's name.
        None if id.revision.is_some() => Some(snapshots.join(id.revision())),
        None => list_dir(&snapshots)
            .into_iter()
            .filter(|p| p.is_dir())
            .max_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok()),
    }
    .filter(|dir| dir.is_dir())?;
    Some(describe_model(
        &id.to_string(),
        &snapshot,
        ModelSource::HubCache,
    ))
}

/// A model a deployment configures (`models = [...]`): a local directory or `.gguf` file as it is, or a
/// hub id described from `cache` (the default hub cache when `None`), or, when the cache does not have it
/// yet, listed without details (workers fetch it). `Err` for an entry that is neither.
pub fn describe_configured(entry: &str, cache: Option<&Path>) -> Result<ModelInfo, String> {
    let path = Path::new(entry);
    let hub_id = HubId::parse(entry).filter(|_| !path.is_absolute());
    let Some(id) = hub_id else {
        if is_local_model(path) {
            return Ok(describe_model(entry, path, ModelSource::Catalog));
        }
        return Err(
            "not a local model directory with config.json, a .gguf file, or a hub id (org/name)"
                .to_owned(),
        );
    };
    let cache = cache.map_or_else(hub_cache_dir, Path::to_path_buf);
    let mut info = hub_cache_model(&cache, &id).unwrap_or_else(|| ModelInfo {
        id: entry.to_owned(),
        source: ModelSource::Catalog,
        path: PathBuf::new(),
        display_name: id.repo.rsplit('/').next().unwrap_or(entry).to_owned(),
        family: None,
        parameters: None,
        active_parameters: None,
        context_length: None,
        dtype: None,
        size_bytes: 0,
        trainable: true,
        supported: true,
        reason: Some(format!(
            "not in this node's hub cache yet (`dn model pull {entry}`)"
        )),
    });
    info.source = ModelSource::Catalog;
    Ok(info)
}

/// A model directory with `config.json`, or a `.gguf` file.
pub fn is_local_model(path: &Path) -> bool {
    path.join("config.json").is_file()
        || (path.is_file() && path.extension().is_some_and(|e| e == "gguf"))
}

/// Model directories (with `config.json`) and `.gguf` files directly under `dir`.
pub fn local_models(dir: &Path) -> Vec<ModelInfo> {
    list_dir(dir)
        .into_iter()
        .filter(|p| is_local_model(p))
        .map(|p| describe_model(&p.display().to_string(), &p, ModelSource::Local))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(family: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/families")
            .join(family)
    }

    /// A mixture of experts lists its active parameters beside the total; a dense model none.
    #[test]
    fn mixtures_of_experts_list_their_active_parameters() {
        for family in ["qwen3_moe", "qwen2_moe", "gpt_oss", "mixtral"] {
            let info = describe_model(family, &fixture(family).join("model"), ModelSource::Local);
            assert!(info.trainable, "{family}: {:?}", info.reason);
            let (total, active) = (info.parameters.unwrap(), info.active_parameters.unwrap());
            assert!(active < total, "{family}: {active} of {total}");
        }
        let dense = describe_model("llama", &fixture("llama").join("model"), ModelSource::Local);
        assert_eq!(dense.active_parameters, None);
        assert!(
            serde_json::to_value(&dense)
                .unwrap()
                .get("active_parameters")
                .is_none()
        );
    }

    #[test]
    fn describes_model_directories_and_gguf_files() {
        let info = describe_model("m", &fixture("qwen3").join("model"), ModelSource::Local);
        assert_eq!(info.family.as_deref(), Some("qwen3"));
        assert!(info.trainable, "{:?}", info.reason);
        assert!(info.parameters.unwrap() > 0 && info.size_bytes > 0);
        assert!(info.dtype.is_some());
        let gguf = describe_model(
            "g",
            &fixture("qwen2").join("model.gguf"),
            ModelSource::Local,
        );
        assert_eq!(gguf.family.as_deref(), Some("qwen2"));
        assert!(gguf.trainable, "{:?}", gguf.reason);
        // A bitsandbytes checkpoint says its 4-bit format.
        let bnb = fixture("llama").join("../../bnb/nf4-dq");
        let bnb = describe_model("b", &bnb, ModelSource::Local);
        assert!(bnb.trainable, "{:?}", bnb.reason);
        assert_eq!(
            bnb.dtype.as_deref(),
            Some("bitsandbytes nf4 (double quant)")
        );

        // Unsupported architectures and missing files say why.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"model_type":"deepseek_v3","hidden_size":8,"intermediate_size":8,"num_hidden_layers":1,
               "num_attention_heads":2,"vocab_size":10,"num_local_experts":4}"#,
        )
        .unwrap();
        let moe = describe_model("moe", dir.path(), ModelSource::Local);
        assert!(!moe.trainable);
        assert!(moe.reason.unwrap().contains("deepseek_v3"));
        std::fs::copy(
            fixture("llama").join("model/config.json"),
            dir.path().join("config.json"),
        )
        .unwrap();
        let bare = describe_model("bare", dir.path(), ModelSource::Local);
        assert!(!bare.trainable);
        assert!(bare.reason.unwrap().contains("tokenizer.json missing"));
    }
}
