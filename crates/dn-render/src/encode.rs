//! Conversation -> tokens + loss mask. The mask is 1 exactly on each assistant message's content and its
//! end-of-turn token: the spans come from rendering the conversation's prefixes (before the message with
//! the generation prompt, through the message without), which must be prefixes of the full render.

use dn_data::{Conversation, Role};

use crate::artifacts::ModelArtifacts;
use crate::error::{Error, Result};

/// One tokenized training example.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    pub input_ids: Vec<u32>,
    /// `loss_mask[i] == 1`: token `i` is a training target.
    pub loss_mask: Vec<u8>,
    /// Tokens were cut from the start to fit `max_sequence_length`.
    pub truncated: bool,
}

impl Example {
    pub fn num_supervised(&self) -> usize {
        self.loss_mask.iter().filter(|m| **m == 1).count()
    }
}

/// A rendered conversation and the byte ranges of it that carry loss.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub text: String,
    pub spans: Vec<(usize, usize)>,
}

/// The supervised span of assistant message `i`: from the end of the prefix rendered with a generation
/// prompt to the end of the template's last end-of-turn token in that message's rendering. `None` when
/// the template is not prefix-stable at this message.
fn assistant_span(
    artifacts: &ModelArtifacts,
    conversation: &Conversation,
    i: usize,
    full: &str,
) -> Result<Option<(usize, usize)>> {
    let (messages, tools) = (&conversation.messages, &conversation.tools);
    let before = artifacts.template.render(&messages[..i], tools, true)?;
    let through = artifacts.template.render(&messages[..=i], tools, false)?;
    if !through.starts_with(&before) || !full.starts_with(&through) {
        return Ok(None);
    }
    let segment = &through[before.len()..];
    let end = match segment.rfind(artifacts.end_of_turn.as_str()) {
        Some(at) => before.len() + at + artifacts.end_of_turn.len(),
        None => before.len() + segment.trim_end().len(),
    };
    Ok(Some((before.len(), end)))
}

/// Private-use characters wrapped around assistant contents for the one-render fast path.
const OPEN: char = '\u{E000}';
const CLOSE: char = '\u{E001}';

/// The fast path: render once with each assistant content wrapped in markers, and read the spans off the
/// markers (content start to the end of the first end-of-turn token after the content). Used only when the
/// template copies contents verbatim (with the markers removed, the text must equal the plain render and
/// each marked range its message's content) and each content directly follows the template's generation
/// prompt, which is what the prefix renders would establish. `None` sends the caller to the prefix renders.
fn marked_spans(
    artifacts: &ModelArtifacts,
    conversation: &Conversation,
    full: &str,
) -> Result<Option<Vec<(usize, usize)>>> {
    let messages = &conversation.messages;
    let Some(generation_prompt) = artifacts.template.generation_prompt() else {
        return Ok(None);
    };
    if messages.iter().any(|m| m.content.contains([OPEN, CLOSE])) {
        return Ok(None);
    }
    let marked: Vec<_> = messages
        .iter()
        .map(|m| {
            let mut m = m.clone();
            if m.role == Role::Assistant {
                m.content = format!("{OPEN}{}{CLOSE}", m.content);
            }
            m
        })
        .collect();
    let text = artifacts
        .template
        .render(&marked, &conversation.tools, false)?;
    let mut plain = String::with_capacity(full.len());
    let mut contents = Vec::new();
    let mut open_at = None;
    for ch in text.chars() {
        match ch {
            OPEN if open_at.is_none() => open_at = Some(plain.len()),
            CLOSE if open_at.is_some() => {
                contents.push((open_at.take().unwrap_or_default(), plain.len()))
            }
            OPEN | CLOSE => return Ok(None),
            c => plain.push(c),
        }
    }
    let assistants: Vec<_> = messages
        .iter()
        .filter(|m| m.role == Role::Assistant)
        .collect();
    if plain != full || open_at.is_some() || contents.len() != assistants.len() {
        return Ok(None);
    }
    let eos = artifacts.end_of_turn.as_str();
    let mut spans = Vec::with_capacity(contents.len());
    for (i, ((start, end), message)) in contents.iter().zip(assistants).enumerate() {
        let next_start = contents.get(i + 1).map_or(full.len(), |c| c.0);
        let Some(at) = full[*end..next_start].find(eos) else {
            return Ok(None);
        };
        if full[*start..*end] != message.content || !full[..*start].ends_with(generation_prompt) {
            return Ok(None);
        }
        spans.push((*start, end + at + eos.len()));
    }
    Ok(Some(spans))
}

/// Renders a conversation with its supervised spans: one render with markers when the template copies
/// contents verbatim, else the prefix renders. A template that is not prefix-stable (one that, say, drops
/// the reasoning of earlier turns) gets one rendering per assistant turn, each supervising only its last
/// turn; if even that fails, the conversation is refused: never a silently wrong mask.
pub fn render_supervised(
    artifacts: &ModelArtifacts,
    conversation: &Conversation,
) -> Result<Vec<Rendered>> {
    let full = artifacts
        .template
        .render(&conversation.messages, &conversation.tools, false)?;
    if let Some(spans) = marked_spans(artifacts, conversation, &full)? {
        return Ok(vec![Rendered { text: full, spans }]);
    }
    render_by_prefixes(artifacts, conversation, full)
}

/// The general path: spans from rendering the prefixes before and through each assistant message.
pub fn render_by_prefixes(
    artifacts: &ModelArtifacts,
    conversation: &Conversation,
    full: String,
) -> Result<Vec<Rendered>> {
    let messages = &conversation.messages;
    let assistants: Vec<usize> = (0..messages.len())
        .filter(|i| messages[*i].role == Role::Assistant)
        .collect();
    let mut spans = Vec::new();
    for &i in &assistants {
        match assistant_span(artifacts, conversation, i, &full)? {
            Some(span) => spans.push(span),
            None => return render_per_turn(artifacts, conversation, &assistants),
        }
    }
    Ok(vec![Rendered { text: full, spans }])
}

fn render_per_turn(
    artifacts: &ModelArtifacts,
    conversation: &Conversation,
    assistants: &[usize],
) -> Result<Vec<Rendered>> {
    assistants
        .iter()
        .map(|&i| {
            let prefix = Conversation {
                messages: conversation.messages[..=i].to_vec(),
                tools: conversation.tools.clone(),
            };
            let text = artifacts.template.render(&prefix.messages, &prefix.tools, false)?;
            let span = assistant_span(artifacts, &prefix, i, &text)?.ok_or_else(|| {
                Error::NotPrefixStable(format!(
                    "rendering the first {i} message(s) with a generation prompt is not a prefix of the \
                     conversation through assistant message {i}; this model's template cannot be masked exactly"
                ))
            })?;
            Ok(Rendered { text, spans: vec![span] })
        })
        .collect()
}

/// Tokenizes a rendering (no special tokens added: the template has them), marks tokens that start inside
/// a supervised span, and keeps the last `max_sequence_length` tokens.
pub fn tokenize(
    artifacts: &ModelArtifacts,
    rendered: &Rendered,
    max_sequence_length: usize,
) -> Result<Example> {
    let encoding = artifacts
        .tokenizer
        .encode(rendered.text.as_str(), false)
        .map_err(|e| Error::Tokenizer(e.to_string()))?;
    let mut input_ids = encoding.get_ids().to_vec();
    let mut loss_mask: Vec<u8> = encoding
        .get_offsets()
        .iter()
        .map(|(start, _)| u8::from(rendered.spans.iter().any(|(s, e)| s <= start && start < e)))
        .collect();
    let truncated = input_ids.len() > max_sequence_length;
    if truncated {
        let cut = input_ids.len() - max_sequence_length;
        input_ids.drain(..cut);
        loss_mask.drain(..cut);
    }
    Ok(Example {
        input_ids,
        loss_mask,
        truncated,
    })
}

/// A conversation's training examples: one, or one per assistant turn for a template that is not
/// prefix-stable.
pub fn encode(
    artifacts: &ModelArtifacts,
    conversation: &Conversation,
    max_sequence_length: usize,
) -> Result<Vec<Example>> {
    render_supervised(artifacts, conversation)?
        .iter()
        .map(|rendered| tokenize(artifacts, rendered, max_sequence_length))
        .collect()
}
