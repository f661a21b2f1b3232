//! The models this deployment can train, from configuration: each a local model directory (HF layout), a
//! GGUF file, or a Hugging Face hub id already in the local hub cache. Family, size and context length are
//! read from the model's `config.json` (or a GGUF's metadata) as the trainer reads them (`dn-arch`), so an
//! entry of a family dn cannot train is refused by name.

use std::path::{Path, PathBuf};

use dn_arch::ModelConfig;
use dn_types::TrainingModel;

/// The deployment's catalog, fixed at startup.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    models: Vec<TrainingModel>,
}

impl Catalog {
    /// Loads every entry; an entry that cannot be read is an error naming it.
    pub fn load(entries: &[String]) -> Result<Catalog, String> {
        let models = entries
            .iter()
            .map(|entry| describe(entry).map_err(|e| format!("catalog model '{entry}': {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Catalog { models })
    }

    pub fn models(&self) -> &[TrainingModel] {
        &self.models
    }

    /// `Ok` if jobs may use `model`: a catalog id, or a local model directory / GGUF file.
    pub fn check_model(&self, model: &str) -> Result<(), String> {
        if self.models.iter().any(|m| m.tinker_id == model) || is_local_model(Path::new(model)) {
            return Ok(());
        }
        let known: Vec<&str> = self.models.iter().map(|m| m.tinker_id.as_str()).collect();
        Err(format!(
            "model '{model}' is not in this deployment's catalog ({}) and is not a local model directory \
             (with config.json) or .gguf file",
            if known.is_empty() {
                "empty".to_owned()
            } else {
                known.join(", ")
            }
        ))
    }
}

fn is_local_model(path: &Path) -> bool {
    path.join("config.json").is_file()
        || (path.is_file() && path.extension().is_some_and(|e| e == "gguf"))
}

fn describe(entry: &str) -> Result<TrainingModel, String> {
    let path = Path::new(entry);
    let config_path = if path.join("config.json").is_file() {
        path.join("config.json")
    } else if path.is_file() && path.extension().is_some_and(|e| e == "gguf") {
        return describe_gguf(entry, path);
    } else {
        hub_cache_config(entry).ok_or_else(|| {
            format!(
                "not a local model directory with config.json, and not found in the Hugging Face hub cache ({})",
                hub_cache_dir().display()
            )
        })?
    };
    let text = std::fs::read_to_string(&config_path)
        .map_err(|e| format!("cannot read {}: {e}", config_path.display()))?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| format!("{}: not JSON: {e}", config_path.display()))?;
    let config = ModelConfig::from_json(&json, &config_path.display().to_string())
        .map_err(|e| e.to_string())?;
    let display_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|_| path.is_dir())
        .unwrap_or_else(|| entry.rsplit('/').next().unwrap_or(entry).to_owned());
    Ok(TrainingModel {
        tinker_id: entry.to_owned(),
        display_name,
        family: config.family.name().into(),
        model_type: "dense".into(),
        size_b: (config.parameter_count() as f64 / 1e9 * 1000.0).round() / 1000.0,
        context_length: config.max_position_embeddings as i64,
        extended_context: false,
        supported_algorithms: vec!["sft".into()],
    })
}

/// Family, size and context length from a GGUF file's metadata and tensor table.
fn describe_gguf(entry: &str, path: &Path) -> Result<TrainingModel, String> {
    let meta = dn_render::gguf::GgufMetadata::read(path).map_err(|e| e.to_string())?;
    let parameters: u64 = meta.tensors.iter().map(|t| t.elements()).sum();
    let tied = !meta.tensors.iter().any(|t| t.name == "output.weight");
    let vocab = meta.strings("tokenizer.ggml.tokens").map_or(0, |t| t.len());
    let json = dn_render::hf_config(&meta, tied, vocab, entry).map_err(|e| e.to_string())?;
    let config = ModelConfig::from_json(&json, entry).map_err(|e| e.to_string())?;
    Ok(TrainingModel {
        tinker_id: entry.to_owned(),
        display_name: meta
            .str("general.name")
            .map(str::to_owned)
            .unwrap_or_else(|| {
                path.file_stem()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned()
            }),
        family: config.family.name().into(),
        model_type: "dense".into(),
        size_b: (parameters as f64 / 1e9 * 1000.0).round() / 1000.0,
        context_length: meta.arch_u64("context_length").map_or(0, |c| c as i64),
        extended_context: false,
        supported_algorithms: vec!["sft".into()],
    })
}

fn hub_cache_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("HF_HUB_CACHE") {
        return PathBuf::from(dir);
    }
    if let Ok(home) = std::env::var("HF_HOME") {
        return PathBuf::from(home).join("hub");
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| ".".into());
    PathBuf::from(home).join(".cache/huggingface/hub")
}

/// `config.json` of a hub id in the local cache: the snapshot `refs/main` points at, else any snapshot.
fn hub_cache_config(model_id: &str) -> Option<PathBuf> {
    let (org, name) = model_id.split_once('/')?;
    if name.contains('/') || org.contains("..") || name.contains("..") {
        return None;
    }
    let repo = hub_cache_dir().join(format!("models--{org}--{name}"));
    let snapshots = repo.join("snapshots");
    if let Ok(main) = std::fs::read_to_string(repo.join("refs/main")) {
        let candidate = snapshots.join(main.trim()).join("config.json");
        if candidate.is_file() {
            return Some(candidate);
        }
    }
    std::fs::read_dir(&snapshots)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("config.json"))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_model_directory() {
        let dir = tempfile::tempdir().unwrap();
        // SmolLM2-135M's config: 134.5M parameters with tied embeddings.
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"model_type":"llama","hidden_size":576,"intermediate_size":1536,"num_hidden_layers":30,
               "num_attention_heads":9,"num_key_value_heads":3,"vocab_size":49152,
               "max_position_embeddings":8192,"tie_word_embeddings":true}"#,
        )
        .unwrap();
        let entry = dir.path().to_string_lossy().into_owned();
        let catalog = Catalog::load(std::slice::from_ref(&entry)).unwrap();
        let model = &catalog.models()[0];
        assert_eq!(
            (model.family.as_str(), model.context_length),
            ("llama", 8192)
        );
        assert_eq!(model.size_b, 0.135);
        catalog.check_model(&entry).unwrap();
        assert!(
            catalog
                .check_model("nope/missing")
                .unwrap_err()
                .contains("not in this deployment's catalog")
        );
        assert!(
            Catalog::load(&["no/such-model".into()])
                .unwrap_err()
                .contains("no/such-model")
        );
        // A family dn cannot train is refused by name.
        let moe = tempfile::tempdir().unwrap();
        std::fs::write(
            moe.path().join("config.json"),
            r#"{"model_type":"mixtral","hidden_size":8,"intermediate_size":8,"num_hidden_layers":1,
               "num_attention_heads":2,"vocab_size":10,"num_local_experts":4}"#,
        )
        .unwrap();
        let e = Catalog::load(&[moe.path().to_string_lossy().into_owned()]).unwrap_err();
        assert!(
            e.contains("mixtral") && e.contains("mixture-of-experts"),
            "{e}"
        );
    }

    #[test]
    fn reads_every_family_of_the_test_fixtures() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/families");
        for family in [
            "llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3", "phi3",
        ] {
            let entry = root
                .join(family)
                .join("model")
                .to_string_lossy()
                .into_owned();
            let catalog = Catalog::load(&[entry]).unwrap();
            assert_eq!(catalog.models()[0].family, family);
        }
        let gguf = root.join("qwen3/model.gguf").to_string_lossy().into_owned();
        assert_eq!(Catalog::load(&[gguf]).unwrap().models()[0].family, "qwen3");
    }

    #[test]
    fn reads_a_gguf_file() {
        let path = std::env::var("DN_TEST_MODEL_GGUF").unwrap_or_else(|_| {
            format!(
                "{}/../../.cache/models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf",
                env!("CARGO_MANIFEST_DIR")
            )
        });
        if !Path::new(&path).is_file() {
            assert!(
                std::env::var("DN_REQUIRE_TEST_MODEL").as_deref() != Ok("1"),
                "{path} missing"
            );
            return;
        }
        let catalog = Catalog::load(std::slice::from_ref(&path)).unwrap();
        let model = &catalog.models()[0];
        assert_eq!(
            (model.family.as_str(), model.context_length, model.size_b),
            ("llama", 8192, 0.135)
        );
        catalog.check_model(&path).unwrap();
        let garbage = tempfile::NamedTempFile::with_suffix(".gguf").unwrap();
        std::fs::write(garbage.path(), "not a model at all").unwrap();
        let entry = garbage.path().to_string_lossy().into_owned();
        assert!(
            Catalog::load(&[entry])
                .unwrap_err()
                .contains("not a GGUF file")
        );
    }
}
