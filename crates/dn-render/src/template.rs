//! The model's own Jinja chat template, compiled once with minijinja and configured like transformers'
//! environment: trim_blocks, lstrip_blocks, Python string methods, `raise_exception`, `strftime_now`, and a
//! `tojson` that prints what Python's `json.dumps` prints.

use dn_data::ChatMessage;
use minijinja::value::{Kwargs, Value as JinjaValue};
use minijinja::{Environment, ErrorKind};
use serde_json::Value;

use crate::error::{Error, Result};

const TEMPLATE_NAME: &str = "chat";

pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
    generation_prompt: Option<String>,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("bos_token", &self.bos_token)
            .field("eos_token", &self.eos_token)
            .finish_non_exhaustive()
    }
}

impl ChatTemplate {
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<Self> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |message: String| -> std::result::Result<JinjaValue, minijinja::Error> {
                Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
            },
        );
        env.add_function("strftime_now", |format: String| {
            chrono::Local::now().format(&format).to_string()
        });
        env.add_filter("tojson", tojson);
        env.add_template_owned(TEMPLATE_NAME, source.to_owned())
            .map_err(|e| Error::Template(format!("does not compile: {e:#}")))?;
        let mut template = ChatTemplate {
            env,
            bos_token: bos_token.to_owned(),
            eos_token: eos_token.to_owned(),
            generation_prompt: None,
        };
        template.generation_prompt = template.probe_generation_prompt();
        Ok(template)
    }

    /// What `add_generation_prompt` appends after a user turn (e.g. `<|im_start|>assistant\n`), if the
    /// template renders a one-message conversation and appends rather than rewrites.
    fn probe_generation_prompt(&self) -> Option<String> {
        let probe = [ChatMessage::new(dn_data::Role::User, "x")];
        let without = self.render(&probe, &[], false).ok()?;
        let with = self.render(&probe, &[], true).ok()?;
        with.strip_prefix(&without)
            .filter(|g| !g.is_empty())
            .map(str::to_owned)
    }

    /// See [`Self::probe_generation_prompt`].
    pub fn generation_prompt(&self) -> Option<&str> {
        self.generation_prompt.as_deref()
    }

    pub fn eos_token(&self) -> &str {
        &self.eos_token
    }

    /// Renders messages (and tool schemas, if any) as transformers' `apply_chat_template(tokenize=False)`.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        tools: &[Value],
        add_generation_prompt: bool,
    ) -> Result<String> {
        let template = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|e| Error::Template(e.to_string()))?;
        let tools = if tools.is_empty() {
            JinjaValue::from(())
        } else {
            JinjaValue::from_serialize(tools)
        };
        template
            .render(minijinja::context! {
                messages => JinjaValue::from_serialize(messages),
                tools => tools,
                add_generation_prompt => add_generation_prompt,
                bos_token => &self.bos_token,
                eos_token => &self.eos_token,
            })
            .map_err(|e| Error::Template(format!("render failed: {e:#}")))
    }
}

/// `tojson(indent=None)` as transformers defines it: `json.dumps(x, ensure_ascii=False, indent=indent)`.
fn tojson(value: JinjaValue, kwargs: Kwargs) -> std::result::Result<JinjaValue, minijinja::Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    kwargs.assert_all_used()?;
    let json: Value = serde_json::to_value(&value)
        .map_err(|e| minijinja::Error::new(ErrorKind::InvalidOperation, e.to_string()))?;
    let mut out = String::new();
    python_json(&json, indent, 0, &mut out);
    Ok(JinjaValue::from_safe_string(out))
}

/// Python's `json.dumps` layout: `", "` and `": "` separators inline, newlines and `indent` spaces when
/// indenting; non-ASCII kept as is.
fn python_json(value: &Value, indent: Option<usize>, depth: usize, out: &mut String) {
    let newline = |out: &mut String, level: usize| {
        if let Some(width) = indent {
            out.push('\n');
            out.push_str(&" ".repeat(width * level));
        }
    };
    let item_separator = if indent.is_some() { "," } else { ", " };
    match value {
        Value::Array(items) if !items.is_empty() => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_separator);
                }
                newline(out, depth + 1);
                python_json(item, indent, depth + 1, out);
            }
            newline(out, depth);
            out.push(']');
        }
        Value::Object(map) if !map.is_empty() => {
            out.push('{');
            for (i, (key, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_separator);
                }
                newline(out, depth + 1);
                out.push_str(&Value::String(key.clone()).to_string());
                out.push_str(": ");
                python_json(item, indent, depth + 1, out);
            }
            newline(out, depth);
            out.push('}');
        }
        other => out.push_str(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tojson_matches_python() {
        let value = serde_json::json!({"b": [1, 2.5, "é<"], "a": {}, "c": null});
        let mut out = String::new();
        python_json(&value, None, 0, &mut out);
        assert_eq!(out, r#"{"b": [1, 2.5, "é<"], "a": {}, "c": null}"#);
        let mut out = String::new();
        python_json(&serde_json::json!({"k": [1]}), Some(2), 0, &mut out);
        assert_eq!(out, "{\n  \"k\": [\n    1\n  ]\n}");
    }

    #[test]
    fn raise_exception_is_an_error() {
        let t = ChatTemplate::new("{{ raise_exception('no system role') }}", "", "").unwrap();
        assert!(
            t.render(&[], &[], false)
                .unwrap_err()
                .to_string()
                .contains("no system role")
        );
    }
}
