//! bitsandbytes 4-bit checkpoints (`load_in_4bit`): which weights of a model directory are quantized (those
//! with a `weight.quant_state.bitsandbytes__*` beside them, whatever the config's skip list says), their
//! parts collected as raw bytes while loading; a projection's kept 4-bit ([`QuantMatrix`], decoded exactly
//! as bitsandbytes decodes it when used), any other decoded at load.

use std::collections::{HashMap, HashSet};

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use dn_model::bnb4::{self, QuantState};

use crate::quant::QuantMatrix;

type Result<T> = std::result::Result<T, String>;

/// The parts bitsandbytes saves beside a quantized `weight`.
const PARTS: [&str; 6] = [
    "absmax",
    "quant_map",
    "nested_absmax",
    "nested_quant_map",
    "quant_state.bitsandbytes__nf4",
    "quant_state.bitsandbytes__fp4",
];

/// The quantized weights of a checkpoint, found from its tensor names.
pub(crate) struct Bnb4Weights {
    weights: HashSet<String>,
    /// Raw bytes by weight name, then part (`weight` for the packed codes).
    parts: HashMap<String, HashMap<&'static str, Vec<u8>>>,
}

impl Bnb4Weights {
    pub(crate) fn find<'a>(names: impl Iterator<Item = &'a str>) -> Self {
        let weights = names
            .filter_map(|n| {
                PARTS[4..]
                    .iter()
                    .find_map(|p| n.strip_suffix(&format!(".{p}")))
                    .map(str::to_owned)
            })
            .collect();
        Bnb4Weights {
            weights,
            parts: HashMap::new(),
        }
    }

    /// Keeps `bytes` when `name` is a quantized weight or one of its parts; false otherwise.
    /// Whether the checkpoint holds no 4-bit weight.
    pub(crate) fn is_empty(&self) -> bool {
        self.weights.is_empty()
    }

    pub(crate) fn take(&mut self, name: &str, bytes: &[u8]) -> bool {
        let (weight, part) = if self.weights.contains(name) {
            (name, "weight")
        } else {
            let Some((weight, part)) = PARTS.iter().find_map(|p| {
                name.strip_suffix(&format!(".{p}"))
                    .filter(|w| self.weights.contains(*w))
                    .map(|w| (w, *p))
            }) else {
                return false;
            };
            (weight, part)
        };
        self.parts
            .entry(weight.to_owned())
            .or_default()
            .insert(part, bytes.to_vec());
        true
    }

    /// The quantized weights: the projections' kept as they are (`QuantMatrix`), the others (a head or
    /// embedding a skip list left quantized) decoded into `tensors` (in `dtype` on `device`).
    pub(crate) fn decode(
        self,
        projections: &HashSet<String>,
        tensors: &mut HashMap<String, Tensor>,
        dtype: DType,
        device: &Device,
    ) -> Result<HashMap<String, Arc<QuantMatrix>>> {
        let mut kept = HashMap::new();
        for weight in &self.weights {
            let parts = self.parts.get(weight);
            let part = |p: &str| parts.and_then(|m| m.get(p)).map(Vec::as_slice);
            let (state, absmax) = decode_state(weight, &part)?;
            let packed = part("weight").ok_or_else(|| missing(weight, "weight"))?;
            if projections.contains(weight) {
                let matrix = QuantMatrix::bnb4(state, packed.to_vec(), absmax)
                    .map_err(|e| format!("{weight}: {e}"))?;
                kept.insert(weight.clone(), Arc::new(matrix));
                continue;
            }
            let values =
                bnb4::dequantize(&state, packed, &absmax).map_err(|e| format!("{weight}: {e}"))?;
            let tensor = Tensor::from_vec(values, state.shape.as_slice(), &Device::Cpu)
                .and_then(|t| t.to_dtype(dtype))
                .and_then(|t| t.to_device(device))
                .map_err(|e| format!("{weight}: {e}"))?;
            tensors.insert(weight.clone(), tensor);
        }
        Ok(kept)
    }
}

fn missing(weight: &str, part: &str) -> String {
    format!("{weight}: bitsandbytes part {part} is missing")
}

/// Little-endian f32s.
fn floats(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// One weight's quant state and decoded block scales from its parts.
fn decode_state<'a>(
    weight: &str,
    part: &dyn Fn(&str) -> Option<&'a [u8]>,
) -> Result<(QuantState, Vec<f32>)> {
    let state_bytes = part(PARTS[4])
        .or_else(|| part(PARTS[5]))
        .ok_or_else(|| missing(weight, "quant_state"))?;
    let state = QuantState::parse(state_bytes).map_err(|e| format!("{weight}: {e}"))?;
    let nested_absmax = part("nested_absmax").map(floats);
    let nested_code = part("nested_quant_map").map(floats);
    let absmax = bnb4::absmax(
        &state,
        part("absmax").ok_or_else(|| missing(weight, "absmax"))?,
        nested_absmax.as_deref(),
        nested_code.as_deref(),
    )
    .map_err(|e| format!("{weight}: {e}"))?;
    Ok((state, absmax))
}
