//! Model files as they are stored: GGUF (read, write, dequantize, its tokenizer and vocabulary),
//! safetensors shards and `config.json`, the Hugging Face hub cache and downloads, the inventory of local
//! models, and GGUF -> HF directory import. No templates, no tensors: dn-render reads tokenizers and
//! templates from what this crate finds, dn-train builds tensors from it.
//!
//! `--model` resolution: a file, a directory, or a hub id `org/name[@revision]` through `hub`: the hub cache
//! first, then, after a probe with a short timeout that turns no network, a gated model or a missing repo
//! into an error naming the hub, the id, the cache and `HF_TOKEN`, downloads with hf-hub: `config.json` first
//! and its architecture checked before any weights, resumable, progress reported to the caller. `inventory`
//! describes a model directory, GGUF file or hub cache from its files (family, parameters, context, dtype,
//! size, trainable or why not): what `dn model list` prints and the catalog serves. `gguf_tokenizer` builds a
//! GGUF's tokenizer the way transformers does (split by the regex of its `tokenizer.ggml.pre`). `weights`
//! dequantizes GGUF tensors (`ggml`: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K) of llama,
//! qwen2, qwen3 and qwen3moe into transformers' names
//! and layout; `import` writes a GGUF as an HF model directory (`dn model import`); `gguf_write` and
//! `gguf_vocab` write llama.cpp files (metadata, tensor infos, aligned data in f32/f16/bf16/q8_0, each tensor
//! asked for in turn; a byte-level BPE tokenizer.json as `tokenizer.ggml.*`).

pub mod bnb4;
mod error;
pub mod ggml;
pub mod gguf;
pub mod gguf_tokenizer;
pub mod gguf_vocab;
pub mod gguf_write;
pub mod hub;
mod import;
pub mod inventory;
pub mod model_files;
pub mod mxfp4;
mod resolve;
pub mod weights;

pub use error::{Error, Result};
pub use gguf_tokenizer::tokenizer_from_gguf;
pub use hf_hub::api::Progress as DownloadProgress;
pub use import::{ImportSummary, hf_config, import_gguf};
pub use resolve::{resolve_model, resolve_model_for_training, resolve_model_path};
