//! The data path on the model's side: model artifacts (tokenizer, chat template, special tokens) from a
//! GGUF file or an HF model directory (found by dn-model), rendering with the model's own template,
//! tokenization, loss masks on assistant tokens only, and truncation. No async runtime, no tensors.

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
