//! bitsandbytes 4-bit weights (NF4, FP4) as transformers saves a `load_in_4bit` model: per quantized
//! linear, `weight` (two 4-bit codes a byte, the even element in the high nibble, over the row-major
//! flattened `[out, in]`), `weight.absmax` (one scale per block of `blocksize` consecutive elements: f32,
//! or with double quantization u8 codes of the 256-entry dynamic map times `nested_absmax` per 256 blocks,
//! plus `nested_offset`), the code tables, and `weight.quant_state.bitsandbytes__{nf4,fp4}`: the JSON of
//! the rest (`quant_type`, `blocksize`, `dtype`, `shape`, `nested_blocksize`, `nested_offset`).
//!
//! Decoded exactly as bitsandbytes' CPU kernels decode them: `absmax = code8[byte] * nested_absmax[i /
//! 256] + offset` and `value = code4[nibble] * absmax[k / blocksize]`, each an f32 operation, rounded to
//! the state's dtype (bf16, f16: to nearest even). Blocks run over the flattened tensor, not per row.
//! Quantization (`quantize`) is bitsandbytes' too: per block `absmax = max |x|`, `x * (1 / absmax)` (a
//! division in a partial last block), the code whose midpoints bracket it (a tie to the lower code).

use serde_json::Value;

/// NF4's 16 values (bitsandbytes' `get_4bit_type("nf4")`, as Python prints them: each rounds to the f32
/// bitsandbytes holds).
#[allow(clippy::excessive_precision)]
pub const NF4: [f32; 16] = [
    -1.0,
    -0.696_192_800_998_687_7,
    -0.525_073_051_452_636_7,
    -0.394_917_488_098_144_53,
    -0.284_441_381_692_886_35,
    -0.184_773_430_228_233_34,
    -0.091_050_036_251_544_95,
    0.0,
    0.079_580_299_556_255_34,
    0.160_930_201_411_247_25,
    0.246_112_301_945_686_34,
    0.337_915_241_718_292_24,
    0.440_709_829_330_444_34,
    0.562_617_003_917_694_1,
    0.722_956_836_223_602_3,
    1.0,
];

/// FP4's 16 values: `[0, 0.0625, 8, 12, 4, 6, 2, 3]` and their negatives, over 12 (code 8 is +0, as the
/// stored `quant_map` holds it).
pub const FP4: [f32; 16] = [
    0.0,
    0.0625 / 12.0,
    8.0 / 12.0,
    1.0,
    4.0 / 12.0,
    6.0 / 12.0,
    2.0 / 12.0,
    3.0 / 12.0,
    0.0,
    -0.0625 / 12.0,
    -8.0 / 12.0,
    -1.0,
    -4.0 / 12.0,
    -6.0 / 12.0,
    -2.0 / 12.0,
    -3.0 / 12.0,
];

/// The two 4-bit formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    Nf4,
    Fp4,
}

impl Code {
    pub fn parse(name: &str) -> Option<Code> {
        match name {
            "nf4" => Some(Code::Nf4),
            "fp4" => Some(Code::Fp4),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Code::Nf4 => "nf4",
            Code::Fp4 => "fp4",
        }
    }

    pub fn values(self) -> &'static [f32; 16] {
        match self {
            Code::Nf4 => &NF4,
            Code::Fp4 => &FP4,
        }
    }

    /// Codes in ascending order of value (bitsandbytes' argsort of the table).
    fn order(self) -> [u8; 16] {
        match self {
            Code::Nf4 => std::array::from_fn(|i| i as u8),
            Code::Fp4 => [11, 10, 13, 12, 15, 14, 9, 0, 8, 1, 6, 7, 4, 5, 2, 3],
        }
    }
}

/// The dtype the weight had, which its decoded values are rounded to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rounding {
    F32,
    F16,
    Bf16,
}

impl Rounding {
    fn parse(name: &str) -> Option<Rounding> {
        match name {
            "float32" => Some(Rounding::F32),
            "float16" => Some(Rounding::F16),
            "bfloat16" => Some(Rounding::Bf16),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Rounding::F32 => "float32",
            Rounding::F16 => "float16",
            Rounding::Bf16 => "bfloat16",
        }
    }

    /// `v` rounded to this dtype (to nearest even), as f32.
    pub fn round(self, v: f32) -> f32 {
        match self {
            Rounding::F32 => v,
            Rounding::F16 => half::f16::from_f32(v).to_f32(),
            Rounding::Bf16 => half::bf16::from_f32(v).to_f32(),
        }
    }
}

/// Double quantization of the absmax: u8 codes of the dynamic map, a scale per `blocksize` of them, and
/// the offset added back.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Nested {
    pub blocksize: usize,
    pub offset: f32,
}

/// A quantized weight's `quant_state` JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantState {
    pub code: Code,
    pub blocksize: usize,
    pub rounding: Rounding,
    pub shape: Vec<usize>,
    pub nested: Option<Nested>,
}

impl QuantState {
    /// Parses the JSON bytes of `weight.quant_state.bitsandbytes__*`; an error says what is wrong.
    pub fn parse(bytes: &[u8]) -> Result<QuantState, String> {
        let json: Value =
            serde_json::from_slice(bytes).map_err(|e| format!("quant_state is not JSON: {e}"))?;
        let field = |k: &str| json.get(k).filter(|v| !v.is_null());
        let text = |k: &str| field(k).and_then(Value::as_str);
        let code = text("quant_type")
            .and_then(Code::parse)
            .ok_or("quant_state: quant_type must be nf4 or fp4")?;
        let blocksize = field("blocksize")
            .and_then(Value::as_u64)
            .filter(|b| (1..=1 << 20).contains(b))
            .ok_or("quant_state: blocksize must be a whole number")?
            as usize;
        let rounding = text("dtype")
            .and_then(Rounding::parse)
            .ok_or("quant_state: dtype must be float32, float16 or bfloat16")?;
        let shape: Vec<usize> = field("shape")
            .and_then(Value::as_array)
            .map(|dims| {
                dims.iter()
                    .filter_map(|d| d.as_u64().map(|d| d as usize))
                    .collect()
            })
            .filter(|dims: &Vec<usize>| !dims.is_empty())
            .ok_or("quant_state: shape must be a list of dimensions")?;
        let nested = match field("nested_blocksize") {
            None => None,
            Some(b) => Some(Nested {
                blocksize: b
                    .as_u64()
                    .filter(|b| (1..=1 << 20).contains(b))
                    .ok_or("quant_state: nested_blocksize must be a whole number")?
                    as usize,
                offset: field("nested_offset")
                    .and_then(Value::as_f64)
                    .ok_or("quant_state: nested_offset is missing")? as f32,
            }),
        };
        Ok(QuantState {
            code,
            blocksize,
            rounding,
            shape,
            nested,
        })
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Blocks of the flattened tensor (the last one may be partial).
    pub fn blocks(&self) -> usize {
        self.numel().div_ceil(self.blocksize)
    }
}

/// The f32 absmax of every block: as stored, or decoded from double quantization (`codes` the u8 bytes,
/// `nested_absmax` a scale per `nested.blocksize` codes, `nested_code` the 256-entry map).
pub fn absmax(
    state: &QuantState,
    stored: &[u8],
    nested_absmax: Option<&[f32]>,
    nested_code: Option<&[f32]>,
) -> Result<Vec<f32>, String> {
    let blocks = state.blocks();
    match (state.nested, nested_absmax, nested_code) {
        (None, _, _) => {
            if stored.len() != blocks * 4 {
                return Err(format!(
                    "absmax: {} bytes for {blocks} blocks of f32",
                    stored.len()
                ));
            }
            Ok(stored
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect())
        }
        (Some(nested), Some(scales), Some(code)) => {
            if stored.len() != blocks {
                return Err(format!(
                    "absmax: {} codes for {blocks} blocks",
                    stored.len()
                ));
            }
            if code.len() != 256 {
                return Err(format!("nested_quant_map: {} values, not 256", code.len()));
            }
            if scales.len() != blocks.div_ceil(nested.blocksize) {
                return Err(format!(
                    "nested_absmax: {} values for {blocks} blocks in groups of {}",
                    scales.len(),
                    nested.blocksize
                ));
            }
            Ok(stored
                .iter()
                .enumerate()
                .map(|(i, byte)| {
                    code[usize::from(*byte)] * scales[i / nested.blocksize] + nested.offset
                })
                .collect())
        }
        _ => Err("double-quantized absmax without nested_absmax and nested_quant_map".into()),
    }
}

/// The `numel` values of a packed weight, rounded to the state's dtype (as f32).
pub fn dequantize(state: &QuantState, packed: &[u8], absmax: &[f32]) -> Result<Vec<f32>, String> {
    let n = state.numel();
    if packed.len() != n.div_ceil(2) {
        return Err(format!(
            "weight: {} bytes for {n} 4-bit values of shape {:?}",
            packed.len(),
            state.shape
        ));
    }
    if absmax.len() != state.blocks() {
        return Err(format!(
            "absmax: {} values for {} blocks",
            absmax.len(),
            state.blocks()
        ));
    }
    let mut out = vec![0.0; n];
    dequantize_range(state, packed, absmax, 0, &mut out);
    Ok(out)
}

/// Elements `start..start + out.len()` of the flattened weight (bounds checked by the caller).
pub fn dequantize_range(
    state: &QuantState,
    packed: &[u8],
    absmax: &[f32],
    start: usize,
    out: &mut [f32],
) {
    let table = state.code.values();
    for (i, v) in out.iter_mut().enumerate() {
        let k = start + i;
        let byte = packed[k / 2];
        let nibble = if k.is_multiple_of(2) {
            byte >> 4
        } else {
            byte & 0x0f
        };
        *v = state
            .rounding
            .round(table[usize::from(nibble)] * absmax[k / state.blocksize]);
    }
}

/// Quantizes `values` (row-major) as bitsandbytes' `quantize_4bit` does: the packed bytes and each block's
/// absmax.
pub fn quantize(values: &[f32], code: Code, blocksize: usize) -> (Vec<u8>, Vec<f32>) {
    let table = code.values();
    let order = code.order();
    let bounds: Vec<f32> = (0..15)
        .map(|i| (table[usize::from(order[i])] + table[usize::from(order[i + 1])]) / 2.0)
        .collect();
    let mut nibbles = Vec::with_capacity(values.len() + 1);
    let mut absmax = Vec::with_capacity(values.len().div_ceil(blocksize));
    for block in values.chunks(blocksize) {
        let am = block.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let full = block.len() == blocksize;
        let clamped = am.max(1e-38);
        let inverse = 1.0 / clamped;
        absmax.push(if full { am } else { clamped });
        for v in block {
            let scaled = if full { v * inverse } else { v / clamped }.clamp(-1.0, 1.0);
            // The number of midpoints strictly below: a tie goes to the lower code.
            let rank = bounds.iter().filter(|b| **b < scaled).count();
            nibbles.push(order[rank]);
        }
    }
    if nibbles.len() % 2 == 1 {
        let rank = bounds.iter().filter(|b| **b < 0.0).count();
        nibbles.push(order[rank]);
    }
    let packed = nibbles.chunks(2).map(|p| (p[0] << 4) | p[1]).collect();
    (packed, absmax)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_json_as_bitsandbytes_writes_it() {
        let json = br#"{"quant_type": "nf4", "blocksize": 64, "dtype": "bfloat16", "shape": [96, 200], "nested_blocksize": 256, "nested_dtype": "float32", "nested_offset": 0.0697721317410469}"#;
        let s = QuantState::parse(json).unwrap();
        assert_eq!(s.code, Code::Nf4);
        assert_eq!((s.blocksize, s.numel(), s.blocks()), (64, 19200, 300));
        assert_eq!(s.rounding, Rounding::Bf16);
        assert_eq!(s.nested.unwrap().offset, 0.069_772_13_f32);
        assert!(
            QuantState::parse(br#"{"quant_type": "int4"}"#)
                .unwrap_err()
                .contains("nf4 or fp4")
        );
    }

    #[test]
    fn quantize_then_dequantize_lands_on_the_codes() {
        // One full block of 64 and a partial one of 3; odd count: a padding nibble.
        let values: Vec<f32> = (0..67).map(|i| ((i as f32) * 0.37).sin() * 2.0).collect();
        let state = QuantState {
            code: Code::Nf4,
            blocksize: 64,
            rounding: Rounding::F32,
            shape: vec![67],
            nested: None,
        };
        let (packed, absmax) = quantize(&values, Code::Nf4, 64);
        assert_eq!((packed.len(), absmax.len()), (34, 2));
        let back = dequantize(&state, &packed, &absmax).unwrap();
        for (block, am) in back.chunks(64).zip(&absmax) {
            for v in block {
                assert!(NF4.iter().any(|c| c * am == *v));
            }
        }
        // The padding nibble is NF4's zero (code 7).
        assert_eq!(packed[33] & 0x0f, 7);
        let err = dequantize(&state, &packed[1..], &absmax).unwrap_err();
        assert!(err.contains("bytes for 67"), "{err}");
    }
}
