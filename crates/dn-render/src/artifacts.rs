//! Model artifacts the data path needs: tokenizer, chat template, special tokens, context length. From a
//! GGUF file (all in its metadata) or an HF model directory (tokenizer.json, tokenizer_config.json,
//! config.json).

use std::path::Path;

use serde_json::Value;
use tokenizers::Tokenizer;

use crate::error::{Error, Result};
use crate::gguf::GgufMetadata;
use crate::template::ChatTemplate;
use crate::tokenizer::tokenizer_from_gguf;

#[derive(Debug)]
pub struct ModelArtifacts {
    pub tokenizer: Tokenizer,
    pub template: ChatTemplate,
    /// The token that ends an assistant turn (the template's `eos_token`, e.g. `<|im_end|>`).
    pub end_of_turn: String,
    pub bos_token: Option<String>,
    pub context_length: Option<u64>,
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
            end_of_turn: eos,
            bos_token: bos,
            context_length: meta.arch_u64("context_length"),
        })
    }

    pub fn from_hf_dir(dir: &Path) -> Result<Self> {
        let tokenizer_path = dir.join("tokenizer.json");
        let tokenizer = Tokenizer::from_file(&tokenizer_path)
            .map_err(|e| model_error(&tokenizer_path, format!("cannot load: {e}")))?;
        let config_path = dir.join("tokenizer_config.json");
        let config: Value = read_json(&config_path)?;
        let source = chat_template_source(&config)
            .ok_or_else(|| model_error(&config_path, "has no chat_template"))?;
        let eos = special_token(&config, "eos_token")
            .ok_or_else(|| model_error(&config_path, "has no eos_token"))?;
        let bos = special_token(&config, "bos_token");
        let template = ChatTemplate::new(&source, bos.as_deref().unwrap_or(""), &eos)?;
        let context_length = read_json(&dir.join("config.json"))
            .ok()
            .and_then(|c: Value| c.get("max_position_embeddings").and_then(Value::as_u64));
        Ok(ModelArtifacts {
            tokenizer,
            template,
            end_of_turn: eos,
            bos_token: bos,
            context_length,
        })
    }
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| model_error(path, format!("cannot read: {e}")))?;
    serde_json::from_str(&text).map_err(|e| model_error(path, format!("invalid JSON: {e}")))
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
