//! The models this deployment trains: the configured entries (local model directories, GGUF files, hub
//! ids) plus every model in the server node's Hugging Face hub cache, described again at each listing (a
//! model pulled since startup appears; `dn model pull` on the server adds one). Family, size and context
//! length come from the model's `config.json` (or a GGUF's metadata) read as the trainer reads it
//! (`dn-arch`), so a configured entry of a family dn cannot train is refused by name at startup.
//!
//! Jobs may name a catalog model, a local model directory or GGUF file, or, unless the deployment sets
//! `catalog_only`, any hub id (`org/name[@revision]`): the worker fetches it.

use std::path::{Path, PathBuf};

use dn_model::hub::HubId;
use dn_model::inventory::{self, ModelInfo};
use dn_types::TrainingModel;

/// The deployment's catalog.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    configured: Vec<String>,
    /// Scanned at each listing; `None`: not part of the catalog.
    hub_cache: Option<PathBuf>,
    catalog_only: bool,
    /// When set, the only directories local model paths may be under (canonical paths).
    model_roots: Option<Vec<PathBuf>>,
}

impl Catalog {
    /// Checks every configured entry: a local model must be readable and of a family dn trains; a hub id
    /// must be well-formed, and of a family dn trains when the hub cache has its config.
    pub fn load(entries: &[String]) -> Result<Catalog, String> {
        for entry in entries {
            let info = inventory::describe_configured(entry, None)
                .map_err(|e| format!("catalog model '{entry}': {e}"))?;
            if !info.supported {
                let reason = info.reason.unwrap_or_default();
                return Err(format!("catalog model '{entry}': {reason}"));
            }
        }
        Ok(Catalog {
            configured: entries.to_vec(),
            hub_cache: None,
            catalog_only: false,
            model_roots: None,
        })
    }

    /// Adds the models of this hub cache to every listing.
    pub fn with_hub_cache(mut self, dir: Option<PathBuf>) -> Self {
        self.hub_cache = dir;
        self
    }

    /// Jobs may then name local models only under these directories (each must exist); any other path is
    /// refused with one message, whether it exists or not. Empty: local paths anywhere, as without it.
    pub fn model_roots(mut self, roots: &[PathBuf]) -> Result<Self, String> {
        if roots.is_empty() {
            self.model_roots = None;
            return Ok(self);
        }
        let canonical = roots
            .iter()
            .map(|r| {
                std::fs::canonicalize(r).map_err(|e| format!("model_roots: {}: {e}", r.display()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.model_roots = Some(canonical);
        Ok(self)
    }

    /// Jobs may then name only catalog models and local paths, not any hub id.
    pub fn catalog_only(mut self, yes: bool) -> Self {
        self.catalog_only = yes;
        self
    }

    /// The catalog now: configured entries first, then the hub cache's trainable models. Reads files.
    pub fn models(&self) -> Vec<TrainingModel> {
        let mut models: Vec<TrainingModel> = self
            .configured
            .iter()
            .filter_map(|entry| {
                inventory::describe_configured(entry, self.hub_cache.as_deref()).ok()
            })
            .map(|info| training_model(&info))
            .collect();
        let cached = self
            .hub_cache
            .as_deref()
            .map(inventory::hub_cache_models)
            .unwrap_or_default();
        for info in cached {
            if info.trainable && !models.iter().any(|m| m.tinker_id == info.id) {
                models.push(training_model(&info));
            }
        }
        models
    }

    /// `Ok` if jobs may use `model`. Reads files.
    pub fn check_model(&self, model: &str) -> Result<(), String> {
        if self.configured.iter().any(|m| m == model) {
            return Ok(());
        }
        let hub_id = HubId::parse(model);
        if let Some(roots) = &self.model_roots
            && hub_id.is_none()
        {
            // Nothing about the path is looked at before it is known to be under a root.
            let under_root = Path::new(model).is_absolute()
                && std::fs::canonicalize(model)
                    .is_ok_and(|p| roots.iter().any(|root| p.starts_with(root)));
            if !under_root {
                return Err(format!(
                    "model '{model}' is not a hub id (org/name), a catalog model, or a model directory \
                     or .gguf file under this deployment's model roots (an absolute path)"
                ));
            }
        }
        if hub_id.is_none() && inventory::is_local_model(Path::new(model)) {
            return Ok(());
        }
        if let Some(id) = &hub_id {
            if !self.catalog_only {
                return Ok(());
            }
            let cached = self
                .hub_cache
                .as_deref()
                .and_then(|cache| inventory::hub_cache_model(cache, id));
            if id.revision.is_none() && cached.is_some_and(|m| m.trainable) {
                return Ok(());
            }
        }
        let known: Vec<String> = self.models().into_iter().map(|m| m.tinker_id).collect();
        let known = if known.is_empty() {
            "empty".to_owned()
        } else {
            known.join(", ")
        };
        Err(match hub_id {
            Some(_) => format!(
                "model '{model}' is not in this deployment's catalog ({known}); it allows catalog models \
                 only (catalog_only): an administrator adds one with `dn model pull` on the server or \
                 the `models` setting"
            ),
            None => format!(
                "model '{model}' is not in this deployment's catalog ({known}), not a hub id \
                 (org/name or org/name@revision) and not a local model directory (with config.json) or \
                 .gguf file"
            ),
        })
    }
}

fn training_model(info: &ModelInfo) -> TrainingModel {
    TrainingModel {
        tinker_id: info.id.clone(),
        display_name: info.display_name.clone(),
        family: info.family.clone().unwrap_or_default(),
        model_type: if info.active_parameters.is_some() {
            "moe"
        } else {
            "dense"
        }
        .into(),
        size_b: info.size_b(),
        active_size_b: info.active_size_b(),
        context_length: info.context_length.map_or(0, |c| c as i64),
        extended_context: false,
        supported_algorithms: vec!["sft".into()],
    }
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
        // Any hub id, unless the deployment allows its catalog only.
        catalog.check_model("acme/missing@v1").unwrap();
        let only = catalog.clone().catalog_only(true);
        only.check_model(&entry).unwrap();
        let e = only.check_model("acme/missing").unwrap_err();
        assert!(
            e.contains("not in this deployment's catalog") && e.contains("catalog_only"),
            "{e}"
        );
        assert!(
            catalog
                .check_model("../etc")
                .unwrap_err()
                .contains("not a hub id")
        );
        // A configured hub id the server has not cached yet is listed without its details.
        let listed = Catalog::load(&["no/such-model".into()]).unwrap().models();
        assert_eq!(
            (listed[0].tinker_id.as_str(), listed[0].size_b),
            ("no/such-model", 0.0)
        );
        assert!(
            Catalog::load(&["no-such-dir".into()])
                .unwrap_err()
                .contains("no-such-dir")
        );
        // A family dn cannot train is refused by name.
        let moe = tempfile::tempdir().unwrap();
        std::fs::write(
            moe.path().join("config.json"),
            r#"{"model_type":"deepseek_v3","hidden_size":8,"intermediate_size":8,"num_hidden_layers":1,
               "num_attention_heads":2,"vocab_size":10,"num_local_experts":4}"#,
        )
        .unwrap();
        let e = Catalog::load(&[moe.path().to_string_lossy().into_owned()]).unwrap_err();
        assert!(
            e.contains("deepseek_v3") && e.contains("mixture-of-experts"),
            "{e}"
        );
    }

    #[test]
    fn reads_every_family_of_the_test_fixtures() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/families");
        for family in [
            "llama",
            "mistral",
            "qwen2",
            "qwen3",
            "gemma2",
            "gemma3",
            "phi3",
            "qwen3_moe",
            "qwen2_moe",
            "gpt_oss",
            "mixtral",
        ] {
            let entry = root
                .join(family)
                .join("model")
                .to_string_lossy()
                .into_owned();
            let catalog = Catalog::load(&[entry]).unwrap();
            let model = &catalog.models()[0];
            assert_eq!(model.family, family);
            let moe = family.ends_with("_moe") || family == "mixtral" || family == "gpt_oss";
            assert_eq!(model.model_type, if moe { "moe" } else { "dense" });
            assert_eq!(model.active_size_b.is_some(), moe, "{family}");
        }
        let gguf = root.join("qwen3/model.gguf").to_string_lossy().into_owned();
        assert_eq!(Catalog::load(&[gguf]).unwrap().models()[0].family, "qwen3");
    }

    #[test]
    fn lists_the_hub_cache_at_each_listing() {
        let cache = tempfile::tempdir().unwrap();
        let catalog = Catalog::load(&[])
            .unwrap()
            .with_hub_cache(Some(cache.path().to_path_buf()))
            .catalog_only(true);
        assert!(catalog.models().is_empty());
        assert!(catalog.check_model("acme/tiny-qwen3").is_err());
        // Pulled after startup: the hub cache layout, refs/main -> snapshots/<commit>/.
        let repo = cache.path().join("models--acme--tiny-qwen3");
        let snapshot = repo.join("snapshots/abc123");
        std::fs::create_dir_all(&snapshot).unwrap();
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("refs/main"), "abc123").unwrap();
        let fixture =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/families/qwen3/model");
        for file in std::fs::read_dir(&fixture).unwrap() {
            let file = file.unwrap().path();
            std::fs::copy(&file, snapshot.join(file.file_name().unwrap())).unwrap();
        }
        let models = catalog.models();
        assert_eq!(models.len(), 1);
        assert_eq!(
            (models[0].tinker_id.as_str(), models[0].family.as_str()),
            ("acme/tiny-qwen3", "qwen3")
        );
        assert!(models[0].context_length > 0);
        catalog.check_model("acme/tiny-qwen3").unwrap();
    }

    #[test]
    fn model_roots_confine_local_paths_and_say_nothing_of_others() {
        let root = tempfile::tempdir().unwrap();
        let inside = root.path().join("tiny");
        std::fs::create_dir_all(&inside).unwrap();
        let config = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/families/llama/model/config.json");
        std::fs::copy(&config, inside.join("config.json")).unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::copy(&config, outside.path().join("config.json")).unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("escape")).unwrap();
        let catalog = Catalog::load(&[])
            .unwrap()
            .model_roots(&[root.path().to_path_buf()])
            .unwrap();
        catalog.check_model(&inside.display().to_string()).unwrap();
        catalog.check_model("acme/any-hub-model").unwrap();
        let refusal = |model: &str| {
            catalog
                .check_model(model)
                .unwrap_err()
                .replace(model, "MODEL")
        };
        let expected = refusal("/etc/passwd");
        assert!(expected.contains("model roots"), "{expected}");
        for model in [
            outside.path().display().to_string(),
            root.path().join("escape").display().to_string(),
            "/no/such/dir".into(),
            "../relative".into(),
        ] {
            assert_eq!(refusal(&model), expected, "{model}");
        }
        assert!(
            Catalog::load(&[])
                .unwrap()
                .model_roots(&["/no/such/root".into()])
                .is_err()
        );
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
