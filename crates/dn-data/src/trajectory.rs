//! ATIF agent trajectories (`steps[]`) -> conversations: user steps become user messages, system steps are
//! skipped, each agent step becomes one assistant message (optional reasoning in `<think>...</think>`, then
//! the message) carrying its tool calls, and each observation result a `tool` message answering its call.
//! Nothing is invented: no canned final message is appended.

use serde_json::{Map, Value};

use crate::message::{ChatMessage, Conversation, FunctionCall, Role, ToolCall};
use crate::normalize::{arguments, content_text, kind};

pub(crate) fn trajectory_to_conversation(
    row: &Map<String, Value>,
    steps: &Value,
) -> Result<Conversation, String> {
    let steps = steps
        .as_array()
        .ok_or_else(|| format!("steps: expected an array, found {}", kind(steps)))?;
    let mut messages = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        step_messages(step, &mut messages).map_err(|e| format!("steps[{i}].{e}"))?;
    }
    // A trajectory whose task was given as its goal rather than as a user step.
    if !messages.iter().any(|m| m.role == Role::User)
        && let Some(goal) = row
            .get("extra")
            .and_then(|e| e.get("goal"))
            .and_then(|g| g.get("description"))
            .and_then(Value::as_str)
            .filter(|g| !g.trim().is_empty())
    {
        messages.insert(0, ChatMessage::new(Role::User, goal));
    }
    Ok(Conversation {
        messages,
        tools: Vec::new(),
    })
}

fn step_messages(step: &Value, messages: &mut Vec<ChatMessage>) -> Result<(), String> {
    let step = step
        .as_object()
        .ok_or_else(|| format!("source: expected a step object, found {}", kind(step)))?;
    let text = content_text(step.get("message").unwrap_or(&Value::Null))
        .map_err(|e| format!("message{e}"))?;
    match step.get("source").and_then(Value::as_str) {
        Some("system") => Ok(()),
        Some("user") => {
            messages.push(ChatMessage::new(Role::User, text));
            Ok(())
        }
        Some("agent") => {
            let reasoning = match step.get("reasoning_content") {
                None | Some(Value::Null) => None,
                Some(Value::String(r)) if r.trim().is_empty() => None,
                Some(Value::String(r)) => Some(r.as_str()),
                Some(other) => {
                    return Err(format!(
                        "reasoning_content: expected a string, found {}",
                        kind(other)
                    ));
                }
            };
            let content = match reasoning {
                Some(r) => format!("<think>{r}</think>\n{text}"),
                None => text,
            };
            let mut assistant = ChatMessage::new(Role::Assistant, content);
            assistant.tool_calls = tool_calls(step.get("tool_calls"))?;
            messages.push(assistant);
            observations(step.get("observation"), messages)
        }
        Some(other) => Err(format!(
            "source: unknown source '{other}' (user, agent or system)"
        )),
        None => Err("source: missing".into()),
    }
}

fn tool_calls(value: Option<&Value>) -> Result<Vec<ToolCall>, String> {
    let calls = match value {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(calls)) => calls,
        Some(other) => {
            return Err(format!(
                "tool_calls: expected an array, found {}",
                kind(other)
            ));
        }
    };
    calls
        .iter()
        .enumerate()
        .map(|(i, call)| {
            let name = call
                .get("function_name")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
                .ok_or_else(|| format!("tool_calls[{i}].function_name: missing"))?;
            let id = call
                .get("tool_call_id")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .unwrap_or_else(|| format!("call_{i}"));
            Ok(ToolCall {
                id,
                kind: "function".into(),
                function: FunctionCall {
                    name: name.to_owned(),
                    arguments: arguments(call.get("arguments")),
                },
            })
        })
        .collect()
}

fn observations(value: Option<&Value>, messages: &mut Vec<ChatMessage>) -> Result<(), String> {
    let results = match value.and_then(|o| o.get("results")) {
        None | Some(Value::Null) => return Ok(()),
        Some(Value::Array(results)) => results,
        Some(other) => {
            return Err(format!(
                "observation.results: expected an array, found {}",
                kind(other)
            ));
        }
    };
    for (i, result) in results.iter().enumerate() {
        let content = match result.get("content") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(_)) => content_text(&result["content"])
                .map_err(|e| format!("observation.results[{i}].content{e}"))?,
            Some(other) => other.to_string(),
        };
        let mut tool = ChatMessage::new(Role::Tool, content);
        tool.tool_call_id = result
            .get("source_call_id")
            .and_then(Value::as_str)
            .map(str::to_owned);
        messages.push(tool);
    }
    Ok(())
}
