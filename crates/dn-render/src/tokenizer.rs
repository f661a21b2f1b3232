//! Tokenizers: `tokenizer.json` of an HF model directory, or built from a GGUF's metadata the way
//! transformers builds it (gpt2-style byte-level BPE; the GGUF's control tokens as special added tokens).

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer};

use crate::error::{Error, Result};
use crate::gguf::{GgufMetadata, GgufValue};

/// GGUF token types (llama.cpp's `llama_token_type`).
const TOKEN_TYPE_CONTROL: u64 = 3;
const TOKEN_TYPE_USER_DEFINED: u64 = 4;

pub fn tokenizer_from_gguf(meta: &GgufMetadata, path: &str) -> Result<Tokenizer> {
    let bad = |message: String| Error::Model {
        path: path.to_owned(),
        message,
    };
    let model = meta.str("tokenizer.ggml.model").unwrap_or("");
    if model != "gpt2" {
        return Err(bad(format!(
            "tokenizer.ggml.model '{model}' is not supported yet (gpt2-style byte-level BPE is)"
        )));
    }
    let tokens = meta
        .strings("tokenizer.ggml.tokens")
        .ok_or_else(|| bad("tokenizer.ggml.tokens is missing".into()))?;
    let merges = meta
        .strings("tokenizer.ggml.merges")
        .ok_or_else(|| bad("tokenizer.ggml.merges is missing".into()))?;
    let vocab: Vocab = tokens
        .iter()
        .enumerate()
        .map(|(id, token)| ((*token).to_owned(), id as u32))
        .collect();
    let merges = merges
        .iter()
        .map(|m| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_owned(), b.to_owned()))
                .ok_or_else(|| bad(format!("merge '{m}' is not two tokens")))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut builder = BPE::builder().vocab_and_merges(vocab, merges);
    if let Some(unk) = meta
        .u64("tokenizer.ggml.unknown_token_id")
        .and_then(|id| tokens.get(id as usize))
    {
        builder = builder.unk_token((*unk).to_owned());
    }
    let bpe = builder
        .build()
        .map_err(|e| bad(format!("cannot build the BPE model: {e}")))?;
    let mut tokenizer = Tokenizer::new(bpe);
    tokenizer.with_pre_tokenizer(Some(ByteLevel::new(false, false, true)));
    tokenizer.with_decoder(Some(ByteLevelDecoder::default()));

    let types: Vec<u64> = meta
        .get("tokenizer.ggml.token_type")
        .and_then(GgufValue::as_array)
        .map(|a| a.iter().map(|v| v.as_u64().unwrap_or(1)).collect())
        .unwrap_or_default();
    let special: Vec<AddedToken> = types
        .iter()
        .enumerate()
        .filter(|(_, t)| **t == TOKEN_TYPE_CONTROL)
        .map(|(id, _)| AddedToken::from(tokens[id].to_owned(), true))
        .collect();
    let user: Vec<AddedToken> = types
        .iter()
        .enumerate()
        .filter(|(_, t)| **t == TOKEN_TYPE_USER_DEFINED)
        .map(|(id, _)| AddedToken::from(tokens[id].to_owned(), false).normalized(false))
        .collect();
    tokenizer.add_special_tokens(&special);
    tokenizer.add_tokens(&user);
    Ok(tokenizer)
}
