//! Conversations as generation prompts: rendered with the model's chat template and its generation prompt,
//! tokenized as transformers' `apply_chat_template(add_generation_prompt=True, tokenize=True)` does; the
//! ids that end a turn; and the tokenizer alone (to read generated tokens back).

use std::path::Path;

use dn_data::{Conversation, Role};
use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;

use crate::artifacts::ModelArtifacts;
use crate::encode::fit_system_role;
use crate::error::{Error, Result};
use dn_model::gguf::GgufMetadata;
use dn_model::tokenizer_from_gguf;

/// The prompt ids of `conversation` (which should end with a user or tool turn), its system message
/// fitted to the template as training fits it.
pub fn encode_prompt(artifacts: &ModelArtifacts, conversation: &Conversation) -> Result<Vec<u32>> {
    let (conversation, _) = fit_system_role(artifacts, conversation);
    let text = artifacts
        .template
        .render(&conversation.messages, &conversation.tools, true)?;
    let encoding = artifacts
        .tokenizer
        .encode(text.as_str(), false)
        .map_err(|e| Error::Tokenizer(e.to_string()))?;
    Ok(encoding.get_ids().to_vec())
}

impl ModelArtifacts {
    /// The ids of the tokens that end an assistant turn (generation stops at any of them).
    pub fn stop_ids(&self) -> Vec<u32> {
        self.end_of_turn
            .iter()
            .filter_map(|t| self.tokenizer.token_to_id(t))
            .collect()
    }
}

/// A model's tokenizer alone, from a `.gguf` file or a model directory's `tokenizer.json`.
pub fn load_tokenizer(path: &Path) -> Result<Tokenizer> {
    if path.is_file() {
        let meta = GgufMetadata::read(path)?;
        return Ok(tokenizer_from_gguf(&meta, &path.display().to_string())?);
    }
    let file = path.join("tokenizer.json");
    Tokenizer::from_file(&file).map_err(|e| Error::Model {
        path: file.display().to_string(),
        message: format!("cannot load: {e}"),
    })
}

/// Text of generated ids, special tokens left out.
pub fn decode(tokenizer: &Tokenizer, ids: &[u32]) -> Result<String> {
    tokenizer
        .decode(ids, true)
        .map_err(|e| Error::Tokenizer(e.to_string()))
}

/// A conversation cut before its last assistant turn, as the job's eval samples show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalPrompt {
    pub prompt_ids: Vec<u32>,
    /// The last user message of the prompt.
    pub prompt: String,
    /// The assistant turn that was cut: what the data says the answer is.
    pub reference: String,
}

/// [`EvalPrompt`] of a conversation whose last message is an assistant's (`None` otherwise), with
/// `system_prompt` scaffolded as training does.
pub fn eval_prompt(
    artifacts: &ModelArtifacts,
    conversation: &Conversation,
    system_prompt: &str,
) -> Option<Result<EvalPrompt>> {
    let ends_with_answer =
        conversation.messages.len() > 1 && conversation.messages.last()?.role == Role::Assistant;
    ends_with_answer.then(|| completion_prompt(artifacts, conversation, system_prompt))
}

/// The prompt to complete for a conversation, `system_prompt` scaffolded as training does: cut before
/// its last message when that is an assistant's (then the reference), else all of it.
pub fn completion_prompt(
    artifacts: &ModelArtifacts,
    conversation: &Conversation,
    system_prompt: &str,
) -> Result<EvalPrompt> {
    let messages = &conversation.messages;
    let (prompt, reference) = match messages.split_last() {
        Some((last, before)) if last.role == Role::Assistant && !before.is_empty() => {
            (before, last.content.clone())
        }
        _ => (messages.as_slice(), String::new()),
    };
    let mut scaffolded = Conversation {
        messages: prompt.to_vec(),
        tools: conversation.tools.clone(),
    };
    dn_data::apply_system_prompt(&mut scaffolded, system_prompt);
    let user = prompt
        .iter()
        .rev()
        .find(|m| m.role == Role::User)
        .map(|m| m.content.clone())
        .unwrap_or_default();
    Ok(EvalPrompt {
        prompt_ids: encode_prompt(artifacts, &scaffolded)?,
        prompt: user,
        reference,
    })
}
