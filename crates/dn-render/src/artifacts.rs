//! Model artifacts the data path needs: tokenizer, chat template, special tokens, end-of-turn tokens,
//! context length, family. From a GGUF file (all in its metadata) or an HF model directory as transformers
//! reads it: tokenizer.json, the chat template from chat_template.jinja (transformers 5 and many hub repos)
//! or else tokenizer_config.json, the eos ids of generation_config.json, config.json.

use std::path::Path;

use serde_json::Value;
use tokenizers::Tokenizer;

use crate::error::{Error, Result};
use crate::template::ChatTemplate;
use dn_model::gguf::GgufMetadata;
use dn_model::{resolve_model_path, tokenizer_from_gguf};

#[derive(Debug)]
pub struct ModelArtifacts {
    pub tokenizer: Tokenizer,
    pub template: ChatTemplate,
    /// Tokens that end an assistant turn: the tokenizer's `eos_token` (e.g. `<|im_end|>`) first, then the
    /// other eos ids of generation_config.json (Gemma's `<end_of_turn>`, Phi-3's `<|end|>`).
    pub end_of_turn: Vec<String>,
    pub bos_token: Option<String>,
    pub context_length: Option<u64>,
    /// `model_type` of config.json (or the GGUF's architecture), when there is one.
    pub model_type: Option<String>,
}

impl ModelArtifacts {
    /// The family dn trains this model as, if `model_type` names one.
    pub fn family(&self) -> Option<dn_arch::Family> {
        self.model_type
            .as_deref()
            .and_then(dn_arch::Family::from_model_type)
    }
}

fn model_error(path: &Path, message: impl Into<String>) -> Error {
    Error::Model {
        path: path.display().to_string(),
        message: message.into(),
    }
}

impl ModelArtifacts {
    /// Loads from a `.gguf` file or an HF model directory.
    pub fn load(path: &Path) -> Result<Self> {
        if path.is_file() && path.extension().is_some_and(|e| e == "gguf") {
            Self::from_gguf(path)
        } else if path.is_dir() {
            Self::from_hf_dir(path)
        } else {
            Err(model_error(path, "not a .gguf file or a model directory"))
        }
    }

    pub fn from_gguf(path: &Path) -> Result<Self> {
        let meta = GgufMetadata::read(path)?;
        let name = path.display().to_string();
        let tokenizer = tokenizer_from_gguf(&meta, &name)?;
        let token = |key: &str| -> Option<String> {
            let id = meta.u64(key)?;
            tokenizer.id_to_token(id as u32)
        };
        let eos = token("tokenizer.ggml.eos_token_id")
            .ok_or_else(|| model_error(path, "tokenizer.ggml.eos_token_id is missing"))?;
        let bos = token("tokenizer.ggml.bos_token_id");
        let source = meta
            .str("tokenizer.chat_template")
            .ok_or_else(|| model_error(path, "has no tokenizer.chat_template"))?;
        let template = ChatTemplate::new(source, bos.as_deref().unwrap_or(""), &eos)?;
        Ok(ModelArtifacts {
            tokenizer,
            template,
            end_of_turn: vec![eos],
            bos_token: bos,
            context_length: meta.arch_u64("context_length"),
            model_type: meta.str("general.architecture").map(str::to_owned),
        })
    }

    pub fn from_hf_dir(dir: &Path) -> Result<Self> {
        let tokenizer_path = dir.join("tokenizer.json");
        let tokenizer = Tokenizer::from_file(&tokenizer_path)
            .map_err(|e| model_error(&tokenizer_path, format!("cannot load: {e}")))?;
        let config_path = dir.join("tokenizer_config.json");
        let config: Value = read_json(&config_path)?;
        let jinja = dir.join("chat_template.jinja");
        let source = if jinja.is_file() {
            read_text(&jinja)?
        } else {
            chat_template_source(&config).ok_or_else(|| {
                model_error(
                    &config_path,
                    "has no chat_template (and there is no chat_template.jinja beside it)",
                )
            })?
        };
        let eos = special_token(&config, "eos_token")
            .ok_or_else(|| model_error(&config_path, "has no eos_token"))?;
        let bos = special_token(&config, "bos_token");
        let template = ChatTemplate::new(&source, bos.as_deref().unwrap_or(""), &eos)?;
        let model_config = read_json(&dir.join("config.json")).ok();
        let context_length = model_config
            .as_ref()
            .and_then(|c| c.get("max_position_embeddings").and_then(Value::as_u64));
        let model_type = model_config
            .as_ref()
            .and_then(|c| c.get("model_type").and_then(Value::as_str))
            .map(str::to_owned);
        let mut end_of_turn = vec![eos];
        for id in generation_eos_ids(dir)? {
            if let Some(token) = tokenizer.id_to_token(id)
                && !end_of_turn.contains(&token)
            {
                end_of_turn.push(token);
            }
        }
        Ok(ModelArtifacts {
            tokenizer,
            template,
            end_of_turn,
            bos_token: bos,
            context_length,
            model_type,
        })
    }
}

/// Model files read by the data path are small; a larger one is a mistake or hostile.
const MAX_CONFIG_BYTES: u64 = 16 << 20;

fn read_text(path: &Path) -> Result<String> {
    let size = std::fs::metadata(path)
        .map_err(|e| model_error(path, format!("cannot read: {e}")))?
        .len();
    if size > MAX_CONFIG_BYTES {
        return Err(model_error(
            path,
            format!("is {size} bytes; at most {MAX_CONFIG_BYTES} are read"),
        ));
    }
    std::fs::read_to_string(path).map_err(|e| model_error(path, format!("cannot read: {e}")))
}

fn read_json(path: &Path) -> Result<Value> {
    serde_json::from_str(&read_text(path)?)
        .map_err(|e| model_error(path, format!("invalid JSON: {e}")))
}

/// generation_config.json's `eos_token_id` (one id or a list); none without the file.
fn generation_eos_ids(dir: &Path) -> Result<Vec<u32>> {
    let path = dir.join("generation_config.json");
    if !path.is_file() {
        return Ok(Vec::new());
    }
    let config = read_json(&path)?;
    let ids = match config.get("eos_token_id") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Number(n)) => n.as_u64().into_iter().collect(),
        Some(Value::Array(list)) => list.iter().filter_map(Value::as_u64).collect(),
        Some(other) => {
            return Err(model_error(
                &path,
                format!("eos_token_id must be an id or a list of ids (got {other})"),
            ));
        }
    };
    Ok(ids.into_iter().map(|id| id as u32).collect())
}

/// `chat_template` is a string, or a list of `{name, template}` where `default` is the one to use.
fn chat_template_source(config: &Value) -> Option<String> {
    match config.get("chat_template")? {
        Value::String(s) => Some(s.clone()),
        Value::Array(list) => list
            .iter()
            .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
            .or_else(|| list.first())
            .and_then(|t| t.get("template"))
            .and_then(Value::as_str)
            .map(str::to_owned),
        _ => None,
    }
}

/// A special token given as a string or as `{"content": ...}`.
fn special_token(config: &Value, key: &str) -> Option<String> {
    match config.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(str::to_owned),
        _ => None,
    }
}

impl ModelArtifacts {
    /// Loads `--model`: a `.gguf` file, a model directory, or a hub id (see [`resolve_model_path`]).
    pub fn resolve(model: &str) -> Result<Self> {
        ModelArtifacts::load(&resolve_model_path(model)?)
    }
}
