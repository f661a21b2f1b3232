//! gpt-oss's experts as its checkpoints hold them, brought to the layout the executors read: `gate_up_proj
//! [E, H, 2I]` becomes `[E, 2I, H]` (its rows still gate and up interleaved, as the executors and PEFT's
//! pairs take them); `down_proj [E, I, H]` becomes `[E, H, I]`. MXFP4 checkpoints
//! (`*_blocks [E, rows, G, 16]`, `*_scales [E, rows, G]`) hold the untransposed rows and are decoded exactly
//! as transformers decodes them (`dn_model::mxfp4`), or kept so (`QuantMatrix::mxfp4`, the same rows).

use std::collections::HashMap;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use dn_arch::ModelConfig;

use crate::quant::QuantMatrix;

type Result<T> = std::result::Result<T, String>;

fn err(e: candle_core::Error) -> String {
    e.to_string()
}

/// A `[E, rows, G, 16]` / `[E, rows, G]` MXFP4 pair's bytes, checked.
fn mxfp4_bytes(blocks: &Tensor, scales: &Tensor, name: &str) -> Result<(Vec<u8>, Vec<u8>)> {
    let dims = scales.dims();
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
    Ok((bytes(blocks)?, bytes(scales)?))
}

/// A `[E, rows, G, 16]` / `[E, rows, G]` MXFP4 pair kept as stored, read as `[E, rows, G * 32]`.
fn keep(blocks: &Tensor, scales: &Tensor, name: &str) -> Result<QuantMatrix> {
    let (blocks_bytes, scales_bytes) = mxfp4_bytes(blocks, scales, name)?;
    QuantMatrix::mxfp4(scales.dims(), blocks_bytes, scales_bytes)
        .map_err(|e| format!("{name}: {e}"))
}

/// A `[E, rows, G, 16]` / `[E, rows, G]` MXFP4 pair decoded to `[E, rows, G * 32]`.
fn decode(blocks: &Tensor, scales: &Tensor, name: &str) -> Result<Tensor> {
    let (blocks_bytes, scales_bytes) = mxfp4_bytes(blocks, scales, name)?;
    let dims = scales.dims();
    let values = dn_model::mxfp4::dequantize(&blocks_bytes, &scales_bytes)
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

/// Brings every sparse layer's interleaved experts into the executors' layout (in `dtype` on `device`);
/// MXFP4 experts go to `kept` as stored when given, else are decoded.
pub(crate) fn load(
    config: &ModelConfig,
    tensors: &mut HashMap<String, Tensor>,
    packed: &HashMap<String, Tensor>,
    (dtype, device): (DType, &Device),
    mut kept: Option<&mut HashMap<String, Arc<QuantMatrix>>>,
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
        for name in [&names.gate_up, &names.down] {
            let pair = (
                packed.get(&format!("{name}_blocks")),
                packed.get(&format!("{name}_scales")),
            );
            if let (Some(kept), (Some(blocks), Some(scales))) = (kept.as_deref_mut(), pair) {
                kept.insert(name.clone(), Arc::new(keep(blocks, scales, name)?));
                continue;
            }
            let rows = rows_of(tensors, packed, name)?;
            tensors.insert(name.clone(), place(rows)?);
        }
    }
    Ok(())
}
