//! Conversation -> tokens + loss mask. By default the mask is 1 exactly on each assistant message's
//! rendering (from the end of the prompt for it, i.e. after the template's generation prompt, through the
//! first end-of-turn token after its content); `train_on` narrows it to the last assistant message or
//! widens it to every token; below `all`, a message's OpenAI `weight: 0` leaves it out. A system message the
//! template cannot render is fitted first (see [`SystemRole`]).

use std::borrow::Cow;

use dn_data::{Conversation, Role};

use crate::artifacts::ModelArtifacts;
use crate::error::{Error, Result};
use crate::template::SystemRole;

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

/// What the loss covers (a job's `train_on`): dn-spec's option, used here as it is.
pub use dn_spec::TrainOn;

/// A rendered conversation and the byte ranges of it that carry loss.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub text: String,
    pub spans: Vec<(usize, usize)>,
    /// For each span, the index of its assistant message in the conversation.
    pub messages: Vec<usize>,
}

/// How the conversation's system message was fitted to the template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SystemFit {
    /// Rendered as the template renders it (or there was none).
    AsIs,
    /// Put in front of the first user message, followed by a blank line (a template without a system role).
    Merged,
    /// Left out, as the template leaves it out of a conversation ending with an assistant turn.
    Dropped,
}

/// The conversation as the template can render it: a system message moved into the first user turn when
/// the template raises on the role, or removed when the template drops it anyway (so prefix renders,
/// which end with a user turn, do not bring it back).
pub fn fit_system_role<'c>(
    artifacts: &ModelArtifacts,
    conversation: &'c Conversation,
) -> (Cow<'c, Conversation>, SystemFit) {
    let messages = &conversation.messages;
    let has_system = messages.first().is_some_and(|m| m.role == Role::System);
    if !has_system {
        return (Cow::Borrowed(conversation), SystemFit::AsIs);
    }
    match artifacts.template.system_role() {
        SystemRole::Rendered => (Cow::Borrowed(conversation), SystemFit::AsIs),
        SystemRole::Raises => {
            let Some(user) = messages.iter().position(|m| m.role == Role::User) else {
                return (Cow::Borrowed(conversation), SystemFit::AsIs);
            };
            let mut fitted = conversation.clone();
            let system = fitted.messages.remove(0);
            if !system.content.is_empty() {
                let first = &mut fitted.messages[user - 1];
                first.content = format!("{}\n\n{}", system.content, first.content);
            }
            (Cow::Owned(fitted), SystemFit::Merged)
        }
        SystemRole::Dropped => {
            if messages.last().is_none_or(|m| m.role != Role::Assistant) {
                return (Cow::Borrowed(conversation), SystemFit::AsIs);
            }
            let mut fitted = conversation.clone();
            fitted.messages.remove(0);
            (Cow::Owned(fitted), SystemFit::Dropped)
        }
    }
}

/// Where in `text` (from `from`) the first end-of-turn token ends.
fn end_of_turn_after(artifacts: &ModelArtifacts, text: &str, from: usize) -> Option<usize> {
    artifacts
        .end_of_turn
        .iter()
        .filter_map(|t| text[from..].find(t.as_str()).map(|at| (at, t.len())))
        .min()
        .map(|(at, len)| from + at + len)
}

/// The supervised span of assistant message `i`: from the end of the prefix rendered with a generation
/// prompt to the end of the first end-of-turn token after its content in that message's rendering (the
/// last end-of-turn token of the rendering when the content does not appear verbatim). `None` when the
/// template is not prefix-stable at this message.
fn assistant_span(
    artifacts: &ModelArtifacts,
    conversation: &Conversation,
    i: usize,
    full: &str,
) -> Result<Option<(usize, usize)>> {
    let (messages, tools) = (&conversation.messages, &conversation.tools);
    let before = artifacts.template.render(&messages[..i], tools, true)?;
    let through = artifacts.template.render(&messages[..=i], tools, false)?;
    // A template that closes every render (Phi-3's eos) closes the full one once, at its end.
    let closing = artifacts.template.closing();
    let through = match through.strip_suffix(closing) {
        Some(open) if !closing.is_empty() && i + 1 < messages.len() => open.to_owned(),
        _ => through,
    };
    if !through.starts_with(&before) || !full.starts_with(&through) {
        return Ok(None);
    }
    let segment = &through[before.len()..];
    let content = messages[i].content.as_str();
    let content_end = [content, content.trim()]
        .into_iter()
        .filter(|c| !c.is_empty())
        .find_map(|c| segment.rfind(c).map(|at| at + c.len()));
    let end = match content_end.and_then(|from| end_of_turn_after(artifacts, segment, from)) {
        Some(end) => end,
        None => artifacts
            .end_of_turn
            .iter()
            .filter_map(|t| segment.rfind(t.as_str()).map(|at| at + t.len()))
            .max()
            .unwrap_or(segment.trim_end().len()),
    };
    Ok(Some((before.len(), before.len() + end)))
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
    // The markers change the contents: a template that raises on them (gpt-oss's on an empty content
    // beside reasoning) is left to the prefix renders, which use the contents as they are.
    let text = match artifacts
        .template
        .render(&marked, &conversation.tools, false)
    {
        Ok(text) => text,
        Err(Error::Template(_)) => return Ok(None),
        Err(e) => return Err(e),
    };
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
    let mut spans = Vec::with_capacity(contents.len());
    for (i, ((start, end), message)) in contents.iter().zip(assistants).enumerate() {
        let next_start = contents.get(i + 1).map_or(full.len(), |c| c.0);
        let Some(turn_end) = end_of_turn_after(artifacts, &full[..next_start], *end) else {
            return Ok(None);
        };
        if full[*start..*end] != message.content || !full[..*start].ends_with(generation_prompt) {
            return Ok(None);
        }
        spans.push((*start, turn_end));
    }
    Ok(Some(spans))
}

fn assistant_indices(conversation: &Conversation) -> Vec<usize> {
    (0..conversation.messages.len())
        .filter(|i| conversation.messages[*i].role == Role::Assistant)
        .collect()
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
        return Ok(vec![Rendered {
            text: full,
            spans,
            messages: assistant_indices(conversation),
        }]);
    }
    render_by_prefixes(artifacts, conversation, full)
}

/// The general path: spans from rendering the prefixes before and through each assistant message.
pub fn render_by_prefixes(
    artifacts: &ModelArtifacts,
    conversation: &Conversation,
    full: String,
) -> Result<Vec<Rendered>> {
    let assistants = assistant_indices(conversation);
    let mut spans = Vec::new();
    for &i in &assistants {
        match assistant_span(artifacts, conversation, i, &full)? {
            Some(span) => spans.push(span),
            None => return render_per_turn(artifacts, conversation, &assistants),
        }
    }
    Ok(vec![Rendered {
        text: full,
        spans,
        messages: assistants,
    }])
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
            Ok(Rendered {
                text,
                spans: vec![span],
                messages: vec![i],
            })
        })
        .collect()
}

/// Tokenizes a rendering (no special tokens added: the template has them), marks tokens that start inside
/// a supervised span (every token with `everything`), and keeps the last `max_sequence_length` tokens.
fn tokenize_masked(
    artifacts: &ModelArtifacts,
    rendered: &Rendered,
    max_sequence_length: usize,
    everything: bool,
) -> Result<Example> {
    let encoding = artifacts
        .tokenizer
        .encode(rendered.text.as_str(), false)
        .map_err(|e| Error::Tokenizer(e.to_string()))?;
    let mut input_ids = encoding.get_ids().to_vec();
    let mut loss_mask: Vec<u8> = encoding
        .get_offsets()
        .iter()
        .map(|(start, _)| {
            u8::from(everything || rendered.spans.iter().any(|(s, e)| s <= start && start < e))
        })
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

/// Tokenizes a rendering with its spans as they are (see [`tokenize_masked`]).
pub fn tokenize(
    artifacts: &ModelArtifacts,
    rendered: &Rendered,
    max_sequence_length: usize,
) -> Result<Example> {
    tokenize_masked(artifacts, rendered, max_sequence_length, false)
}

/// Keeps the spans `train_on` and the messages' weights select; a rendering left without any is dropped,
/// unless none keeps one (the last then stands for the conversation, with nothing supervised).
fn select_spans(
    conversation: &Conversation,
    renders: Vec<Rendered>,
    train_on: TrainOn,
) -> Vec<Rendered> {
    let last = assistant_indices(conversation).last().copied();
    let keep = |message: usize| {
        conversation.messages[message].weight != Some(0)
            && (train_on != TrainOn::LastAssistant || Some(message) == last)
    };
    let mut selected: Vec<Rendered> = renders
        .into_iter()
        .map(|mut r| {
            let (spans, messages) = r
                .spans
                .iter()
                .zip(&r.messages)
                .filter(|(_, m)| keep(**m))
                .map(|(s, m)| (*s, *m))
                .unzip();
            r.spans = spans;
            r.messages = messages;
            r
        })
        .collect();
    if selected.iter().any(|r| !r.spans.is_empty()) {
        selected.retain(|r| !r.spans.is_empty());
    } else {
        selected.drain(..selected.len().saturating_sub(1));
    }
    selected
}

/// A conversation's training examples and how its system message was fitted: one example, or one per
/// assistant turn for a template that is not prefix-stable.
pub fn encode_conversation(
    artifacts: &ModelArtifacts,
    conversation: &Conversation,
    max_sequence_length: usize,
    train_on: TrainOn,
) -> Result<(Vec<Example>, SystemFit)> {
    let (conversation, fit) = fit_system_role(artifacts, conversation);
    if train_on == TrainOn::All {
        let text = artifacts
            .template
            .render(&conversation.messages, &conversation.tools, false)?;
        let rendered = Rendered {
            text,
            spans: Vec::new(),
            messages: Vec::new(),
        };
        let example = tokenize_masked(artifacts, &rendered, max_sequence_length, true)?;
        return Ok((vec![example], fit));
    }
    let renders = select_spans(
        &conversation,
        render_supervised(artifacts, &conversation)?,
        train_on,
    );
    let examples = renders
        .iter()
        .map(|rendered| tokenize(artifacts, rendered, max_sequence_length))
        .collect::<Result<_>>()?;
    Ok((examples, fit))
}

/// [`encode_conversation`] supervising every assistant message.
pub fn encode(
    artifacts: &ModelArtifacts,
    conversation: &Conversation,
    max_sequence_length: usize,
) -> Result<Vec<Example>> {
    Ok(encode_conversation(
        artifacts,
        conversation,
        max_sequence_length,
        TrainOn::Assistant,
    )?
    .0)
}
