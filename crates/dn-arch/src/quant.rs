//! A checkpoint's stored quantization (`quantization_config`): what dn reads (bitsandbytes 4-bit, gpt-oss's
//! MXFP4 experts), and every other method refused by name before any weight is read.

use serde_json::{Map, Value};

use crate::Family;

/// bitsandbytes' two 4-bit formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bnb4Type {
    Nf4,
    Fp4,
}

impl Bnb4Type {
    pub fn name(self) -> &'static str {
        match self {
            Bnb4Type::Nf4 => "nf4",
            Bnb4Type::Fp4 => "fp4",
        }
    }
}

/// How a checkpoint stores (some of) its weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredQuantization {
    /// bitsandbytes 4-bit (`load_in_4bit`): the quantized linears' weights packed two codes a byte with a
    /// scale per block (itself quantized when `double_quant`); embeddings, norms and skipped modules as
    /// they were.
    Bnb4 {
        quant_type: Bnb4Type,
        double_quant: bool,
    },
    /// gpt-oss's experts in MXFP4.
    Mxfp4,
    /// A GGUF file's projections in a ggml block type (the most used one): `block` values in `bytes`.
    Ggml {
        name: &'static str,
        block: u16,
        bytes: u16,
    },
}

impl StoredQuantization {
    /// Bytes per weight of the projections this quantization holds (`None`: not the projections').
    pub fn projection_bytes_per_weight(&self) -> Option<f64> {
        match self {
            // 4 bits, and an f32 scale per block of 64 once decoded at load.
            StoredQuantization::Bnb4 { .. } => Some(0.5 + 4.0 / 64.0),
            StoredQuantization::Ggml { block, bytes, .. } => {
                Some(f64::from(*bytes) / f64::from(*block))
            }
            StoredQuantization::Mxfp4 => None,
        }
    }
}

impl std::fmt::Display for StoredQuantization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoredQuantization::Bnb4 {
                quant_type,
                double_quant,
            } => write!(
                f,
                "bitsandbytes {}{}",
                quant_type.name(),
                if *double_quant { " (double quant)" } else { "" }
            ),
            StoredQuantization::Mxfp4 => f.write_str("mxfp4 experts"),
            StoredQuantization::Ggml { name, .. } => f.write_str(name),
        }
    }
}

/// The methods transformers knows that dn does not read, with what they are.
const REFUSED: [(&str, &str); 16] = [
    ("gptq", "GPTQ int4/int8 weights with group indices"),
    ("awq", "AWQ int4 weights"),
    ("hqq", "HQQ weights"),
    ("fp8", "FP8 weights"),
    ("fbgemm_fp8", "FP8 weights"),
    ("compressed-tensors", "compressed-tensors (int/fp8) weights"),
    ("eetq", "EETQ int8 weights"),
    ("quanto", "quanto weights"),
    ("torchao", "torchao weights"),
    ("aqlm", "AQLM codebooks"),
    ("vptq", "VPTQ codebooks"),
    ("higgs", "HIGGS weights"),
    ("bitnet", "BitNet ternary weights"),
    ("spqr", "SpQR weights"),
    ("auto-round", "AutoRound int weights"),
    ("fp_quant", "FP-Quant weights"),
];

/// `quantization_config` read: what the checkpoint stores, or why dn cannot train it.
pub(crate) fn read(q: &Map<String, Value>, family: Family) -> Result<StoredQuantization, String> {
    let method = q
        .get("quant_method")
        .and_then(Value::as_str)
        .unwrap_or("unknown");
    let flag = |k: &str| q.get(k).and_then(Value::as_bool) == Some(true);
    match method {
        // gpt-oss's MXFP4 experts are decoded at load, as transformers does on a device without its kernels.
        "mxfp4" if family == Family::GptOss => Ok(StoredQuantization::Mxfp4),
        "bitsandbytes" if flag("load_in_8bit") => Err(
            "quantization_config: a bitsandbytes 8-bit checkpoint (load_in_8bit: int8 weights with SCB \
             scales) cannot be trained yet; 4-bit ones (nf4, fp4) and the unquantized weights can"
                .into(),
        ),
        "bitsandbytes" if flag("load_in_4bit") => {
            let quant_type = match q.get("bnb_4bit_quant_type").and_then(Value::as_str) {
                Some("nf4") => Bnb4Type::Nf4,
                // transformers' default.
                Some("fp4") | None => Bnb4Type::Fp4,
                Some(other) => {
                    return Err(format!(
                        "quantization_config: bnb_4bit_quant_type {other:?} is not a bitsandbytes 4-bit type (nf4, fp4)"
                    ));
                }
            };
            Ok(StoredQuantization::Bnb4 {
                quant_type,
                double_quant: flag("bnb_4bit_use_double_quant"),
            })
        }
        "bitsandbytes" => Err(
            "quantization_config: bitsandbytes without load_in_4bit or load_in_8bit".into(),
        ),
        other => {
            let what = REFUSED
                .iter()
                .find(|(m, _)| *m == other)
                .map_or("a quantization dn does not read", |(_, what)| *what);
            Err(format!(
                "quantization_config: quant_method {other:?} ({what}) cannot be trained; bitsandbytes \
                 4-bit checkpoints (nf4, fp4) and unquantized weights can"
            ))
        }
    }
}
