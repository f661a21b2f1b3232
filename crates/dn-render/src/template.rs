//! The model's own Jinja chat template, compiled once with minijinja and configured like transformers'
//! environment: trim_blocks, lstrip_blocks, Python string methods, `raise_exception`, `strftime_now`, and a
//! `tojson` that prints what Python's `json.dumps` prints. What the template does with a system message is
//! probed once ([`SystemRole`]); `strftime_now` can be pinned to a fixed time (a job renders with its
//! creation time, so every attempt trains on the same tokens).

use std::fmt::Write as _;

use chrono::{DateTime, FixedOffset};
use dn_data::{ChatMessage, Role};
use minijinja::value::{Kwargs, Value as JinjaValue};
use minijinja::{Environment, ErrorKind};
use serde_json::Value;

use crate::error::{Error, Result};

const TEMPLATE_NAME: &str = "chat";

/// What a template does with a system message in a conversation that ends with an assistant turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SystemRole {
    /// Renders it (in a system turn, or folded into a user turn as Gemma 3's does).
    Rendered,
    /// Raises on it (Gemma 2): dn puts it in front of the first user message, followed by a blank line.
    Raises,
    /// Leaves it out (Mistral's v3 template puts it in the last user turn, which a training conversation
    /// does not end with).
    Dropped,
}

pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
    generation_prompt: Option<String>,
    /// What a render without the generation prompt ends with after the last turn (Phi-3's templates
    /// close every conversation with the eos token); empty for most templates.
    closing: String,
    system_role: SystemRole,
    /// What `strftime_now` renders; `None`: the current local time.
    now: Option<DateTime<FixedOffset>>,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("bos_token", &self.bos_token)
            .field("eos_token", &self.eos_token)
            .finish_non_exhaustive()
    }
}

/// The messages as templates read them: each as serialized, its reasoning under both names templates
/// use (`reasoning_content`: Qwen3, DeepSeek-R1; `thinking`: gpt-oss).
fn template_messages(messages: &[ChatMessage]) -> JinjaValue {
    let values: Vec<serde_json::Value> = messages
        .iter()
        .map(|m| {
            let mut value = serde_json::to_value(m).unwrap_or_default();
            if let (Some(reasoning), Some(object)) = (&m.reasoning_content, value.as_object_mut()) {
                object.insert("thinking".into(), reasoning.clone().into());
            }
            value
        })
        .collect();
    JinjaValue::from_serialize(values)
}

impl ChatTemplate {
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<Self> {
        let mut env = Environment::new();
        // A template is the model repo's code: its loops are bounded by fuel (instructions per render).
        env.set_fuel(Some(template_fuel()));
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
            strftime(chrono::Local::now().fixed_offset(), &format)
        });
        env.add_filter("tojson", tojson);
        env.add_template_owned(TEMPLATE_NAME, source.to_owned())
            .map_err(|e| Error::Template(format!("does not compile: {e:#}")))?;
        let mut template = ChatTemplate {
            env,
            bos_token: bos_token.to_owned(),
            eos_token: eos_token.to_owned(),
            generation_prompt: None,
            closing: String::new(),
            system_role: SystemRole::Rendered,
            now: None,
        };
        // A template that cannot render one short message within the limits is refused at load.
        if let Some((prompt, closing)) = template.probe_generation_prompt()? {
            template.generation_prompt = Some(prompt);
            template.closing = closing;
        }
        template.system_role = template.probe_system_role();
        Ok(template)
    }

    /// Renders `strftime_now` as of `now` from here on.
    pub fn set_now(&mut self, now: DateTime<FixedOffset>) {
        self.now = Some(now);
    }

    /// See [`SystemRole`].
    pub fn system_role(&self) -> SystemRole {
        self.system_role
    }

    fn probe_system_role(&self) -> SystemRole {
        const PROBE: &str = "dn-system-probe";
        let turns = [
            ChatMessage::new(Role::User, "x"),
            ChatMessage::new(Role::Assistant, "y"),
        ];
        let with_system: Vec<_> = std::iter::once(ChatMessage::new(Role::System, PROBE))
            .chain(turns.iter().cloned())
            .collect();
        match self.render(&with_system, &[], false) {
            Ok(text) if text.contains(PROBE) => SystemRole::Rendered,
            Ok(_) => SystemRole::Dropped,
            // Only a template that renders the same turns without the system message refuses the role.
            Err(_) if self.render(&turns, &[], false).is_ok() => SystemRole::Raises,
            Err(_) => SystemRole::Rendered,
        }
    }

    /// What `add_generation_prompt` adds after a user turn (e.g. `<|im_start|>assistant\n`), and what the
    /// render without it closes with instead: nothing for most templates, the eos token for Phi-3's.
    /// `None` when the template renders no one-message conversation, or renders the two unrelatedly.
    /// A template past its limits on this one-message render is an error (it would be on every row).
    fn probe_generation_prompt(&self) -> Result<Option<(String, String)>> {
        let probe = [ChatMessage::new(dn_data::Role::User, "x")];
        let render = |add_generation_prompt| match self.render(&probe, &[], add_generation_prompt) {
            Ok(text) => Ok(Some(text)),
            Err(e @ Error::TemplateLimit(_)) => Err(e),
            Err(_) => Ok(None),
        };
        let (Some(without), Some(with)) = (render(false)?, render(true)?) else {
            return Ok(None);
        };
        if let Some(prompt) = with.strip_prefix(&without) {
            return Ok((!prompt.is_empty()).then(|| (prompt.to_owned(), String::new())));
        }
        // A render that closes with the eos token: the generation prompt follows what precedes it.
        let eos = self.eos_token.as_str();
        if eos.is_empty() || !without.trim_end().ends_with(eos) {
            return Ok(None);
        }
        let open = &without[..without.trim_end().len() - eos.len()];
        let Some(prompt) = with.strip_prefix(open) else {
            return Ok(None);
        };
        Ok((!prompt.is_empty()).then(|| (prompt.to_owned(), without[open.len()..].to_owned())))
    }

    /// See [`Self::probe_generation_prompt`]: the tail a render without the generation prompt closes with.
    pub fn closing(&self) -> &str {
        &self.closing
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
        let base = minijinja::context! {
            messages => template_messages(messages),
            tools => tools,
            add_generation_prompt => add_generation_prompt,
            bos_token => &self.bos_token,
            eos_token => &self.eos_token,
        };
        let context = match self.now {
            Some(now) => minijinja::context! {
                strftime_now => JinjaValue::from_function(move |format: String| strftime(now, &format)),
                ..base
            },
            None => base,
        };
        let mut out = BoundedOutput(String::new());
        template
            .render_captured_to(context, &mut out)
            .map_err(|e| match e.kind() {
                ErrorKind::OutOfFuel => Error::TemplateLimit(format!(
                    "render failed: the template ran {} instructions without finishing (a runaway \
                     loop?); the limit is DN_TEMPLATE_FUEL",
                    template_fuel()
                )),
                ErrorKind::WriteFailure => Error::TemplateLimit(format!(
                    "render failed: the output passed {MAX_RENDER_BYTES} bytes"
                )),
                _ => Error::Template(format!("render failed: {e:#}")),
            })?;
        Ok(out.0)
    }
}

/// The most bytes one render may write.
const MAX_RENDER_BYTES: usize = 64 << 20;
/// Instructions one render may run unless `DN_TEMPLATE_FUEL` says otherwise (real chat templates use
/// thousands per message).
const DEFAULT_TEMPLATE_FUEL: u64 = 20_000_000;

fn template_fuel() -> u64 {
    std::env::var("DN_TEMPLATE_FUEL")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&f| f > 0)
        .unwrap_or(DEFAULT_TEMPLATE_FUEL)
}

/// A render's output, refusing to grow past [`MAX_RENDER_BYTES`].
struct BoundedOutput(String);

impl std::io::Write for BoundedOutput {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.0.len() + buf.len() > MAX_RENDER_BYTES {
            return Err(std::io::Error::other("render output too large"));
        }
        // minijinja writes whole UTF-8 strings.
        let text = std::str::from_utf8(buf).map_err(std::io::Error::other)?;
        self.0.push_str(text);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `strftime` of `now`; a format chrono cannot render is the template's error, not a panic.
fn strftime(
    now: DateTime<FixedOffset>,
    format: &str,
) -> std::result::Result<String, minijinja::Error> {
    let mut out = String::new();
    write!(out, "{}", now.format(format)).map_err(|_| {
        minijinja::Error::new(
            ErrorKind::InvalidOperation,
            format!("strftime_now: cannot render the format {format:?}"),
        )
    })?;
    Ok(out)
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
    fn strftime_now_is_pinned_and_bad_formats_are_errors() {
        let mut t = ChatTemplate::new("{{ strftime_now('%d %b %Y') }}", "", "").unwrap();
        t.set_now(DateTime::parse_from_rfc3339("2026-07-26T10:00:00+00:00").unwrap());
        assert_eq!(t.render(&[], &[], false).unwrap(), "26 Jul 2026");
        let t = ChatTemplate::new("{{ strftime_now('%Q') }}", "", "").unwrap();
        let e = t.render(&[], &[], false).unwrap_err().to_string();
        assert!(e.contains("strftime_now"), "{e}");
    }

    #[test]
    fn system_roles_are_probed() {
        let rendered = "{% for m in messages %}{{ m.role }}:{{ m.content }};{% endfor %}";
        let raises =
            "{% if messages[0].role == 'system' %}{{ raise_exception('no system') }}{% endif %}x";
        let dropped = "{% for m in messages %}{% if m.role != 'system' %}{{ m.content }}{% endif %}{% endfor %}";
        for (source, role) in [
            (rendered, SystemRole::Rendered),
            (raises, SystemRole::Raises),
            (dropped, SystemRole::Dropped),
        ] {
            assert_eq!(
                ChatTemplate::new(source, "", "").unwrap().system_role(),
                role
            );
        }
    }

    #[test]
    fn runaway_templates_end_in_an_error_at_once() {
        let started = std::time::Instant::now();
        let loops = "{% for a in range(10000) %}{% for b in range(10000) %}{% for c in range(10000) %}\
                     {% endfor %}{% endfor %}{% endfor %}";
        let e = ChatTemplate::new(loops, "", "").unwrap_err();
        assert!(matches!(e, Error::TemplateLimit(_)) && e.to_string().contains("DN_TEMPLATE_FUEL"));
        let wide = "{{ 'x' * 70000000 }}";
        let e = ChatTemplate::new(wide, "", "").unwrap_err();
        assert!(e.to_string().contains("bytes"), "output bound: {e}");
        assert!(started.elapsed() < std::time::Duration::from_secs(30));
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
