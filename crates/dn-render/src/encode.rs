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

/// Byte ranges of the rendered text that carry loss.
pub fn supervised_spans(
    artifacts: &ModelArtifacts,
    conversation: &Conversation,
) -> Result<(String, Vec<(usize, usize)>)> {
    let template = &artifacts.template;
    let messages = &conversation.messages;
    let tools = &conversation.tools;
    let full = template.render(messages, tools, false)?;
    let mut spans = Vec::new();
    for (i, message) in messages.iter().enumerate() {
        if message.role != Role::Assistant {
            continue;
        }
        let before = template.render(&messages[..i], tools, true)?;
        let through = template.render(&messages[..=i], tools, false)?;
        if !full.starts_with(&before)
            || !through.starts_with(&before)
            || !full.starts_with(&through)
        {
            return Err(Error::NotPrefixStable(format!(
                "rendering the first {i} message(s) with a generation prompt is not a prefix of the whole \
                 conversation (assistant message {i})"
            )));
        }
        let segment = &through[before.len()..];
        let end = match segment.rfind(artifacts.end_of_turn.as_str()) {
            Some(at) => before.len() + at + artifacts.end_of_turn.len(),
            None => before.len() + segment.trim_end().len(),
        };
        spans.push((before.len(), end));
    }
    Ok((full, spans))
}

/// Renders, tokenizes (no special tokens added: the template has them) and masks one conversation;
/// keeps the last `max_sequence_length` tokens.
pub fn encode(
    artifacts: &ModelArtifacts,
    conversation: &Conversation,
    max_sequence_length: usize,
) -> Result<Example> {
    let (text, spans) = supervised_spans(artifacts, conversation)?;
    let encoding = artifacts
        .tokenizer
        .encode(text.as_str(), false)
        .map_err(|e| Error::Tokenizer(e.to_string()))?;
    let mut input_ids = encoding.get_ids().to_vec();
    let mut loss_mask: Vec<u8> = encoding
        .get_offsets()
        .iter()
        .map(|(start, _)| u8::from(spans.iter().any(|(s, e)| s <= start && start < e)))
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
