//! One dataset row (a JSON object) -> one [`Conversation`], trying the accepted shapes in the reference's
//! order: `messages[]` (with or without tool calls, plus `tools[]` for native agent records), an ATIF
//! trajectory (`steps[]`), then prompt/completion with their aliases. Errors name the field.

use serde_json::{Map, Value};

use crate::message::{ChatMessage, Conversation, FunctionCall, Role, ToolCall};
use crate::trajectory::trajectory_to_conversation;

pub const PROMPT_KEYS: [&str; 4] = ["prompt", "input", "question", "task_prompt"];
pub const COMPLETION_KEYS: [&str; 6] = [
    "completion",
    "expected_output",
    "target",
    "answer",
    "output",
    "response",
];

/// Normalizes one row; the error message names the field at fault.
pub fn normalize_row(row: &Value) -> Result<Conversation, String> {
    let conversation = row_conversation(row)?;
    if !conversation
        .messages
        .iter()
        .any(|m| m.role == Role::Assistant)
    {
        return Err("no assistant message: nothing to train on".into());
    }
    Ok(conversation)
}

/// A row of any accepted shape as a conversation, with or without an assistant message (a prompt to
/// complete); [`normalize_row`] is this plus the training data's rule that there is something to learn.
pub fn row_conversation(row: &Value) -> Result<Conversation, String> {
    let object = row
        .as_object()
        .ok_or_else(|| format!("expected a JSON object, found {}", kind(row)))?;
    let present = |key: &str| object.get(key).filter(|v| !v.is_null());
    let conversation = if let Some(messages) = present("messages") {
        messages_row(object, messages)?
    } else if let Some(steps) = present("steps") {
        trajectory_to_conversation(object, steps)?
    } else {
        prompt_completion_row(object)?
    };
    Ok(conversation)
}

pub(crate) fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn messages_row(row: &Map<String, Value>, messages: &Value) -> Result<Conversation, String> {
    let list = messages
        .as_array()
        .ok_or_else(|| format!("messages: expected an array, found {}", kind(messages)))?;
    let messages = list
        .iter()
        .enumerate()
        .map(|(i, m)| message(m).map_err(|e| format!("messages[{i}].{e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let tools = match row.get("tools") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(tools)) => tools.clone(),
        Some(other) => return Err(format!("tools: expected an array, found {}", kind(other))),
    };
    Ok(Conversation { messages, tools })
}

fn message(value: &Value) -> Result<ChatMessage, String> {
    let object = value
        .as_object()
        .ok_or_else(|| format!("role: expected a message object, found {}", kind(value)))?;
    let role = match object.get("role").and_then(Value::as_str) {
        Some("system") | Some("developer") => Role::System,
        Some("user") => Role::User,
        Some("assistant") => Role::Assistant,
        Some("tool") => Role::Tool,
        Some(other) => {
            return Err(format!(
                "role: unknown role '{other}' (system, user, assistant or tool)"
            ));
        }
        None => return Err("role: missing".into()),
    };
    let content = content_text(object.get("content").unwrap_or(&Value::Null))
        .map_err(|e| format!("content{e}"))?;
    let tool_calls = match object.get("tool_calls") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(calls)) => calls
            .iter()
            .enumerate()
            .map(|(i, c)| tool_call(c, i).map_err(|e| format!("tool_calls[{i}].{e}")))
            .collect::<Result<_, _>>()?,
        Some(other) => {
            return Err(format!(
                "tool_calls: expected an array, found {}",
                kind(other)
            ));
        }
    };
    if !tool_calls.is_empty() && role != Role::Assistant {
        return Err("tool_calls: only assistant messages make tool calls".into());
    }
    let text_field = |key: &str| -> Result<Option<String>, String> {
        match object.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(format!("{key}: expected a string, found {}", kind(other))),
        }
    };
    let weight = match object.get("weight") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_f64() {
            Some(w) if w == 0.0 || w == 1.0 => Some(w as u8),
            _ => {
                return Err(format!(
                    "weight: expected 0 or 1 (the training weight of an assistant message), found {v}"
                ));
            }
        },
    };
    if weight.is_some() && role != Role::Assistant {
        return Err("weight: only assistant messages carry a training weight".into());
    }
    let reasoning_content = reasoning(text_field("reasoning_content")?, text_field("thinking")?)?
        .filter(|r| !r.trim().is_empty());
    if reasoning_content.is_some() && role != Role::Assistant {
        return Err("reasoning_content: only assistant messages carry reasoning".into());
    }
    Ok(ChatMessage {
        role,
        content,
        tool_calls,
        tool_call_id: text_field("tool_call_id")?,
        name: text_field("name")?,
        weight,
        reasoning_content,
    })
}

/// The reasoning of a message given as `reasoning_content` or `thinking` (both: they must agree).
fn reasoning(content: Option<String>, thinking: Option<String>) -> Result<Option<String>, String> {
    match (content, thinking) {
        (Some(a), Some(b)) if a != b => Err(
            "thinking: differs from reasoning_content (give the reasoning once, under either name)"
                .into(),
        ),
        (a, b) => Ok(a.or(b)),
    }
}

/// A string, null (empty), or a list of text parts (`"text"` or `{"type": "text", "text": ...}`),
/// concatenated. The error starts with the sub-path (`[2].type: ...`) or `: ...`.
pub(crate) fn content_text(value: &Value) -> Result<String, String> {
    match value {
        Value::Null => Ok(String::new()),
        Value::String(s) => Ok(s.clone()),
        Value::Array(parts) => {
            let mut text = String::new();
            for (i, part) in parts.iter().enumerate() {
                match part {
                    Value::String(s) => text.push_str(s),
                    Value::Object(p) => {
                        match (p.get("type").and_then(Value::as_str), p.get("text")) {
                            (
                                Some("text" | "input_text" | "output_text") | None,
                                Some(Value::String(s)),
                            ) => text.push_str(s),
                            (Some(other), _) => {
                                return Err(format!(
                                    "[{i}].type: '{other}' parts are not supported (text only)"
                                ));
                            }
                            (None, _) => {
                                return Err(format!("[{i}]: a part needs a 'text' string"));
                            }
                        }
                    }
                    other => {
                        return Err(format!(
                            "[{i}]: expected a text part, found {}",
                            kind(other)
                        ));
                    }
                }
            }
            Ok(text)
        }
        other => Err(format!(
            ": expected a string or a list of text parts, found {}",
            kind(other)
        )),
    }
}

/// `{id, type: "function", function: {name, arguments}}` or `{id, name, arguments}`.
fn tool_call(value: &Value, index: usize) -> Result<ToolCall, String> {
    let object = value.as_object().ok_or_else(|| {
        format!(
            "function: expected a tool call object, found {}",
            kind(value)
        )
    })?;
    let function = match object.get("function") {
        Some(Value::Object(f)) => f,
        Some(other) => {
            return Err(format!(
                "function: expected an object, found {}",
                kind(other)
            ));
        }
        None => object,
    };
    let name = function
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or("function.name: missing")?;
    let id = match object.get("id") {
        Some(Value::String(id)) => id.clone(),
        None | Some(Value::Null) => format!("call_{index}"),
        Some(other) => return Err(format!("id: expected a string, found {}", kind(other))),
    };
    Ok(ToolCall {
        id,
        kind: "function".into(),
        function: FunctionCall {
            name: name.to_owned(),
            arguments: arguments(function.get("arguments")),
        },
    })
}

/// Arguments as a JSON object when they are one or a string holding one; other strings stay strings.
pub(crate) fn arguments(value: Option<&Value>) -> Value {
    match value {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(parsed @ Value::Object(_)) => parsed,
            _ => Value::String(s.clone()),
        },
        Some(other) => other.clone(),
    }
}

/// The first non-empty of `keys`, as text (numbers and booleans are written out; objects as JSON).
fn first_text(row: &Map<String, Value>, keys: &[&str]) -> Option<String> {
    keys.iter().find_map(|key| match row.get(*key)? {
        Value::Null => None,
        Value::String(s) if s.trim().is_empty() => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    })
}

fn prompt_completion_row(row: &Map<String, Value>) -> Result<Conversation, String> {
    let prompt = first_text(row, &PROMPT_KEYS);
    let completion = first_text(row, &COMPLETION_KEYS);
    match (prompt, completion) {
        (Some(prompt), Some(completion)) => Ok(Conversation {
            messages: vec![
                ChatMessage::new(Role::User, prompt),
                ChatMessage::new(Role::Assistant, completion),
            ],
            tools: Vec::new(),
        }),
        (None, Some(_)) => Err(format!(
            "no prompt: expected one of {} (or messages, or steps)",
            PROMPT_KEYS.join(", ")
        )),
        (_, None) => {
            let keys: Vec<&str> = row.keys().map(String::as_str).take(8).collect();
            Err(format!(
                "matches no row shape: expected messages, steps, or a prompt ({}) with a completion ({}); found keys [{}]",
                PROMPT_KEYS.join("/"),
                COMPLETION_KEYS.join("/"),
                keys.join(", ")
            ))
        }
    }
}
