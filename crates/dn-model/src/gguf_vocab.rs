//! A model directory's tokenizer and chat template as GGUF metadata (llama.cpp's `tokenizer.ggml.*` keys):
//! a byte-level BPE `tokenizer.json` (GPT-2 style, as Llama 3, Qwen and SmolLM2 have) becomes its tokens,
//! token types, merges, the pre-tokenizer's name, the special token ids and the chat template. Any other
//! tokenizer is refused by name.

use std::path::Path;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::gguf_tokenizer::{LLAMA3_SPLIT, QWEN2_SPLIT};
use crate::gguf_write::KvValue;
use crate::model_files::read_json;

/// llama.cpp's token types.
const NORMAL: i32 = 1;
const CONTROL: i32 = 3;
const USER_DEFINED: i32 = 4;
const UNUSED: i32 = 5;

fn vocab_error(path: &Path, message: impl Into<String>) -> Error {
    Error::Model {
        path: path.display().to_string(),
        message: message.into(),
    }
}

/// llama.cpp's name for the pre-tokenizer of `tokenizer.json`.
fn pre_name(pre: &Value, path: &Path) -> Result<&'static str> {
    let kind = pre.get("type").and_then(Value::as_str).unwrap_or("");
    let byte_level = |v: &Value| {
        v.get("type").and_then(Value::as_str) == Some("ByteLevel")
            && v.get("use_regex").and_then(Value::as_bool) != Some(false)
    };
    if kind == "ByteLevel" && byte_level(pre) {
        return Ok("gpt-2");
    }
    let steps: Vec<&Value> = pre
        .get("pretokenizers")
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    if let [split, last] = steps.as_slice()
        && last.get("type").and_then(Value::as_str) == Some("ByteLevel")
    {
        if split.get("type").and_then(Value::as_str) == Some("Digits")
            && split.get("individual_digits").and_then(Value::as_bool) == Some(true)
            && byte_level(last)
        {
            return Ok("smollm");
        }
        let regex = split
            .get("pattern")
            .and_then(|p| p.get("Regex"))
            .and_then(Value::as_str);
        match regex {
            Some(r) if r == QWEN2_SPLIT => return Ok("qwen2"),
            Some(r) if r == LLAMA3_SPLIT => return Ok("llama-bpe"),
            _ => {}
        }
    }
    Err(vocab_error(
        path,
        "its pre-tokenizer is not one dn can name for llama.cpp (GPT-2's, Llama 3's, Qwen 2's, SmolLM's)",
    ))
}

/// A special token of tokenizer_config.json: a string, or `{"content": ...}`.
fn special(config: &Value, key: &str) -> Option<String> {
    match config.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content")?.as_str().map(str::to_owned),
        _ => None,
    }
}

/// The `tokenizer.ggml.*` keys (and `tokenizer.chat_template`) of the model directory `dir`, with the
/// token list padded to `vocab_size` (the embedding's rows) as llama.cpp's converter pads it.
pub fn tokenizer_kv(dir: &Path, vocab_size: usize) -> Result<Vec<(String, KvValue)>> {
    let path = dir.join("tokenizer.json");
    let tokenizer: Value = read_json(&path).map_err(|e| vocab_error(&path, e))?;
    let model = &tokenizer["model"];
    if model.get("type").and_then(Value::as_str) != Some("BPE") {
        return Err(vocab_error(
            &path,
            "only byte-level BPE tokenizers can be written to a GGUF yet",
        ));
    }
    let pre = pre_name(&tokenizer["pre_tokenizer"], &path)?;
    let vocab = model["vocab"]
        .as_object()
        .ok_or_else(|| vocab_error(&path, "model.vocab is missing"))?;
    let mut tokens: Vec<Option<(String, i32)>> = vec![None; vocab_size];
    let mut place = |id: u64, token: &str, kind: i32| -> Result<()> {
        let slot = tokens.get_mut(id as usize).ok_or_else(|| {
            vocab_error(
                &path,
                format!("token {token:?} has id {id}, past the model's vocabulary of {vocab_size}"),
            )
        })?;
        *slot = Some((token.to_owned(), kind));
        Ok(())
    };
    for (token, id) in vocab {
        let id = id
            .as_u64()
            .ok_or_else(|| vocab_error(&path, format!("token {token:?} has no id")))?;
        place(id, token, NORMAL)?;
    }
    for added in tokenizer["added_tokens"].as_array().into_iter().flatten() {
        let (Some(id), Some(content)) = (added["id"].as_u64(), added["content"].as_str()) else {
            continue;
        };
        let kind = if added["special"].as_bool() == Some(true) {
            CONTROL
        } else {
            USER_DEFINED
        };
        place(id, content, kind)?;
    }
    let (names, types): (Vec<String>, Vec<i32>) = tokens
        .into_iter()
        .enumerate()
        .map(|(id, t)| t.unwrap_or_else(|| (format!("[PAD{id}]"), UNUSED)))
        .unzip();
    let merges: Vec<String> = model["merges"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| match m {
            Value::String(s) => Some(s.clone()),
            Value::Array(pair) => Some(format!(
                "{} {}",
                pair.first()?.as_str()?,
                pair.get(1)?.as_str()?
            )),
            _ => None,
        })
        .collect();
    let config_path = dir.join("tokenizer_config.json");
    let config: Value = read_json(&config_path).unwrap_or(Value::Null);
    let id_of = |token: &str| names.iter().position(|n| n == token).map(|i| i as u32);
    let mut kv = vec![
        (
            "tokenizer.ggml.model".to_owned(),
            KvValue::Str("gpt2".into()),
        ),
        ("tokenizer.ggml.pre".to_owned(), KvValue::Str(pre.into())),
    ];
    for (key, name) in [
        ("bos_token", "bos_token_id"),
        ("eos_token", "eos_token_id"),
        ("unk_token", "unknown_token_id"),
        ("pad_token", "padding_token_id"),
    ] {
        if let Some(id) = special(&config, key).and_then(|t| id_of(&t)) {
            kv.push((format!("tokenizer.ggml.{name}"), KvValue::U32(id)));
        }
    }
    let add_bos = config["add_bos_token"].as_bool().unwrap_or(false);
    kv.push((
        "tokenizer.ggml.add_bos_token".into(),
        KvValue::Bool(add_bos),
    ));
    let jinja = dir.join("chat_template.jinja");
    let template = if jinja.is_file() {
        std::fs::read_to_string(&jinja).ok()
    } else {
        config["chat_template"].as_str().map(str::to_owned)
    };
    if let Some(template) = template {
        kv.push(("tokenizer.chat_template".into(), KvValue::Str(template)));
    }
    kv.push(("tokenizer.ggml.tokens".into(), KvValue::Strs(names)));
    kv.push(("tokenizer.ggml.token_type".into(), KvValue::I32s(types)));
    kv.push(("tokenizer.ggml.merges".into(), KvValue::Strs(merges)));
    Ok(kv)
}
