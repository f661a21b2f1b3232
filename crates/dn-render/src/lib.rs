//! The data path on the model's side: model artifacts (tokenizer, chat template, special tokens) from a
//! GGUF file or an HF model directory (found by dn-model), rendering with the model's own template,
//! tokenization, loss masks on assistant tokens only, and truncation. No async runtime, no tensors.
//!
//! The chat template (`chat_template.jinja`, else `tokenizer_config.json`, or the GGUF's) runs in minijinja
//! configured like transformers' environment, on fuel and with a bounded output: a runaway template fails the
//! model at load, or `prepare` stops every conversation at the first one that runs out. Two probes at load:
//! the generation prompt (and the eos a template closes renders with, Phi-3) and what it does with a system
//! message (renders, raises, drops); `strftime_now` is pinned per job. End-of-turn tokens are the `eos_token`
//! plus `generation_config.json`'s eos ids.
//!
//! `Conversation -> Example {input_ids, loss_mask}`: the system message is fitted to the template first
//! (merged into the first user turn, or dropped), then masks come from one render with private-use markers
//! around assistant contents when the template copies contents verbatim and each content follows the
//! generation prompt; otherwise from prefix renders (before a message with the generation prompt, through
//! it), which must be prefixes of the full render; otherwise one example per assistant turn; otherwise the
//! conversation is refused. `train_on` and per-message weights select spans. Token ids match transformers'
//! `apply_chat_template` (the SmolLM2 fixture from `scripts/reference/chat_parity.py`, every family's from
//! `family_chat.py`). `prompt`: a conversation as generation prompt ids, the eval prompts (a conversation cut
//! before its last assistant turn), the stop ids, the tokenizer alone and decoding.

mod artifacts;
mod encode;
mod error;
mod prepare;
mod prompt;
mod template;

pub use artifacts::ModelArtifacts;
pub use encode::{
    Example, Rendered, SystemFit, TrainOn, encode, encode_conversation, fit_system_role,
    render_by_prefixes, render_supervised, tokenize,
};
pub use error::{Error, Result};
pub use prepare::{
    PrepareOptions, PrepareStats, Prepared, prepare, prepare_observed, prepare_until,
};
pub use prompt::{
    EvalPrompt, completion_prompt, decode, encode_prompt, eval_prompt, load_tokenizer,
};
pub use template::{ChatTemplate, SystemRole};
pub use tokenizers::Tokenizer;
