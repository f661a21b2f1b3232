//! The model side of the data path: model artifacts (tokenizer, chat template, special tokens) from a GGUF
//! file or an HF model directory, rendering with the model's own template, tokenization, loss masks on
//! assistant tokens only, and truncation. No async runtime, no tensors.

mod artifacts;
mod encode;
mod error;
pub mod gguf;
pub mod gguf_vocab;
pub mod gguf_write;
pub mod hub;
mod import;
pub mod inventory;
pub mod model_files;
mod prepare;
mod prompt;
mod resolve;
mod template;
mod tokenizer;
pub mod weights;

pub use artifacts::ModelArtifacts;
pub use encode::{
    Example, Rendered, SystemFit, TrainOn, encode, encode_conversation, fit_system_role,
    render_by_prefixes, render_supervised, tokenize,
};
pub use error::{Error, Result};
pub use hf_hub::api::Progress as DownloadProgress;
pub use import::{ImportSummary, hf_config, import_gguf};
pub use prepare::{
    PrepareOptions, PrepareStats, Prepared, prepare, prepare_observed, prepare_until,
};
pub use prompt::{
    EvalPrompt, completion_prompt, decode, encode_prompt, eval_prompt, load_tokenizer,
};
pub use resolve::{resolve_model, resolve_model_for_training, resolve_model_path};
pub use template::{ChatTemplate, SystemRole};
pub use tokenizer::tokenizer_from_gguf;
pub use tokenizers::Tokenizer;
