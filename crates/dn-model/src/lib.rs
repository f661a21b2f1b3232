//! Model files as they are stored: GGUF (read, write, dequantize, its tokenizer and vocabulary),
//! safetensors shards and `config.json`, the Hugging Face hub cache and downloads, the inventory of local
//! models, and GGUF -> HF directory import. No templates, no tensors: dn-render reads tokenizers and
//! templates from what this crate finds, dn-train builds tensors from it.

mod error;
pub mod gguf;
pub mod gguf_tokenizer;
pub mod gguf_vocab;
pub mod gguf_write;
pub mod hub;
mod import;
pub mod inventory;
pub mod model_files;
mod resolve;
pub mod weights;

pub use error::{Error, Result};
pub use gguf_tokenizer::tokenizer_from_gguf;
pub use hf_hub::api::Progress as DownloadProgress;
pub use import::{ImportSummary, hf_config, import_gguf};
pub use resolve::{resolve_model, resolve_model_for_training, resolve_model_path};
