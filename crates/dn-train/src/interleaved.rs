//! gpt-oss's experts as its checkpoints hold them, brought to the layout the executors read: `gate_up_proj
//! [E, H, 2I]` becomes `[E, 2I, H]` (its rows still gate and up interleaved, as the executors and PEFT's
//! pairs take them); `down_proj [E, I, H]` becomes `[E, H, I]`. MXFP4 checkpoints
//! (`*_blocks [E, rows, G, 16]`, `*_scales [E, rows, G]`) hold the untransposed rows and are decoded exactly
//! as transformers decodes them (`dn_model::mxfp4`).

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use dn_arch::ModelConfig;

type Result<T> = std::result::Result<T, String>;

fn err(e: candle_core::Error) -> String {
    e.to_string()
}

/// A `[E, rows, G, 16]` / `[E, rows, G]` MXFP4 pair decoded to `[E, rows, G * 32]`.
fn decode(blocks: &Tensor, scales: &Tensor, name: &str) -> Result<Tensor> {
    let dims = scales.dims().to_vec();
    if blocks.dims().len() != 4 || dims.len() != 3 || blocks.dims()[..3] != dims[..] {
        return Err(format!(
            "{name}_blocks {:?} and {name}_scales {:?} are not an MXFP4 pair",
            blocks.dims(),
            dims
        ));
    }
    let bytes = |t: &Tensor| -> Result<Vec<u8>> {
        t.to_dtype(DType::U8)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1::<u8>())
            .map_err(err)
    };
    let values = dn_model::mxfp4::dequantize(&bytes(blocks)?, &bytes(scales)?)
        .map_err(|e| format!("{name}: {e}"))?;
    Tensor::from_vec(values, (dims[0], dims[1], dims[2] * 32), &Device::Cpu).map_err(err)
}

/// `name` as a float tensor `[E, rows, cols]` of untransposed rows: decoded from MXFP4 when packed, else
/// the stored `[E, cols, rows]` transposed.
fn rows_of(
    tensors: &mut HashMap<String, Tensor>,
    packed: &HashMap<String, Tensor>,
    name: &str,
) -> Result<Tensor> {
    if let Some(stored) = tensors.remove(name) {
        return stored
            .transpose(1, 2)
            .and_then(|t| t.contiguous())
            .map_err(err);
    }
    match (
        packed.get(&format!("{name}_blocks")),
        packed.get(&format!("{name}_scales")),
    ) {
        (Some(blocks), Some(scales)) => decode(blocks, scales, name),
        _ => Err(format!(
            "weight {name} is missing from the model (nor is it there as {name}_blocks and {name}_scales)"
        )),
    }
}

/// Brings every sparse layer's interleaved experts into the executors' layout (in `dtype` on `device`).
pub(crate) fn load(
    config: &ModelConfig,
    tensors: &mut HashMap<String, Tensor>,
    packed: &HashMap<String, Tensor>,
    dtype: DType,
    device: &Device,
) -> Result<()> {
    if !config.experts.is_some_and(|e| e.interleaved) {
        return Ok(());
    }
    for (i, layer) in config.layers.iter().enumerate() {
        if !layer.sparse {
            continue;
        }
        let names = config.expert_names(i);
        let place = |t: Tensor| {
            t.to_dtype(dtype)
                .and_then(|t| t.to_device(device))
                .map_err(err)
        };
        let gate_up = rows_of(tensors, packed, &names.gate_up)?;
        let down = rows_of(tensors, packed, &names.down)?;
        tensors.insert(names.gate_up.clone(), place(gate_up)?);
        tensors.insert(names.down.clone(), place(down)?);
    }
    Ok(())
}
