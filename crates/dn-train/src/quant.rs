//! Frozen weights kept in the quantization their checkpoint stores (a GGUF file's ggml block types,
//! bitsandbytes' NF4/FP4; under a quantized base, an embedding or head stored in bf16/f16): a fraction of
//! the memory of the decoded weight. Each use decodes the
//! matrix into a buffer that lives only as long as that product (its rows in parallel), so at most one
//! projection is ever held decoded; the decoded values are exactly what loading it decoded would hold.
//!
//! [`QuantLinear`] is the candle op (`x W^T`, input gradient `g W`) the graph executor applies; the CPU
//! engine decodes through [`QuantMatrix::dequantize_into`] itself.

use std::sync::Arc;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Shape, Storage, Tensor};
use dn_model::bnb4::{self, QuantState};
use dn_model::ggml::GgmlType;
use dn_model::mxfp4;
use rayon::prelude::*;

use crate::kernels::Real;

/// How a [`QuantMatrix`] stores its values.
enum QuantData {
    /// Each row `cols / block` ggml blocks.
    Ggml {
        kind: GgmlType,
        bytes: Vec<u8>,
    },
    /// bitsandbytes 4-bit: two codes a byte over the flattened matrix, a scale per block.
    Bnb4 {
        state: QuantState,
        packed: Vec<u8>,
        absmax: Vec<f32>,
    },
    /// A 16-bit float weight (an embedding or head that QLoRA leaves unquantized) computed in f32: every
    /// value exact in it.
    Bf16(Vec<half::bf16>),
    F16(Vec<half::f16>),
    /// gpt-oss's MXFP4 experts: per row `cols / 32` groups of 16 bytes (`blocks`) and a scale byte each.
    Mxfp4 {
        blocks: Vec<u8>,
        scales: Vec<u8>,
    },
}

/// A frozen `[rows, cols]` weight in its stored quantization (`dims`, its shape as the model reads it:
/// `[rows, cols]`, or `[experts, rows / experts, cols]` for a mixture's fused experts).
pub struct QuantMatrix {
    pub rows: usize,
    pub cols: usize,
    pub dims: Vec<usize>,
    data: QuantData,
}

/// Rows `first..first + rows` of a [`QuantMatrix`] (one expert's of fused experts), or all of them.
#[derive(Clone, Copy)]
pub struct QuantRows<'a> {
    pub matrix: &'a QuantMatrix,
    pub first: usize,
    pub rows: usize,
}

impl<'a> QuantRows<'a> {
    pub fn whole(matrix: &'a QuantMatrix) -> Self {
        QuantRows {
            matrix,
            first: 0,
            rows: matrix.rows,
        }
    }

    pub fn cols(&self) -> usize {
        self.matrix.cols
    }

    /// Rows `first..` of this view decoded into `out` (whole rows).
    pub(crate) fn dequantize_rows(&self, first: usize, out: &mut [f32]) {
        self.matrix.dequantize_rows(self.first + first, out);
    }

    /// Rows `first..` of this view decoded into `out` as `T`, in parallel.
    pub(crate) fn decode_rows_as<T: Real>(&self, first: usize, out: &mut [T]) {
        self.matrix.decode_rows_as(self.first + first, out);
    }
}

/// Rows decoded per parallel task.
const ROWS_PER_TASK: usize = 16;

impl QuantMatrix {
    /// `rows` rows of ggml blocks of `kind`.
    pub fn ggml(kind: GgmlType, rows: usize, cols: usize, bytes: Vec<u8>) -> Result<Self, String> {
        let expected = kind
            .size_of(cols)
            .map(|row| row * rows)
            .ok_or_else(|| format!("{cols} columns are not whole {} blocks", kind.name))?;
        if bytes.len() != expected {
            return Err(format!(
                "{} bytes for [{rows}, {cols}] in {} (expected {expected})",
                bytes.len(),
                kind.name
            ));
        }
        Ok(QuantMatrix {
            rows,
            cols,
            dims: vec![rows, cols],
            data: QuantData::Ggml { kind, bytes },
        })
    }

    /// A bitsandbytes 4-bit weight of a 2-D `state.shape`, its absmax already decoded.
    pub fn bnb4(state: QuantState, packed: Vec<u8>, absmax: Vec<f32>) -> Result<Self, String> {
        let [rows, cols] = state.shape[..] else {
            return Err(format!(
                "a 4-bit weight of shape {:?} is not a matrix",
                state.shape
            ));
        };
        if packed.len() != state.numel().div_ceil(2) || absmax.len() != state.blocks() {
            return Err(format!(
                "{} bytes and {} block scales for a [{rows}, {cols}] 4-bit weight",
                packed.len(),
                absmax.len()
            ));
        }
        Ok(QuantMatrix {
            rows,
            cols,
            dims: vec![rows, cols],
            data: QuantData::Bnb4 {
                state,
                packed,
                absmax,
            },
        })
    }

    /// A `[rows, cols]` weight stored in bf16 or f16, kept so (`None` for another dtype or shape).
    pub fn half(weight: &Tensor) -> candle_core::Result<Option<Self>> {
        let Ok((rows, cols)) = weight.dims2() else {
            return Ok(None);
        };
        let flat = weight.flatten_all()?;
        let data = match weight.dtype() {
            DType::BF16 => QuantData::Bf16(flat.to_vec1()?),
            DType::F16 => QuantData::F16(flat.to_vec1()?),
            _ => return Ok(None),
        };
        Ok(Some(QuantMatrix {
            rows,
            cols,
            dims: vec![rows, cols],
            data,
        }))
    }

    /// MXFP4 `blocks [.., rows, groups, 16]` and `scales [.., rows, groups]` (`dims` the scales' shape)
    /// as a matrix of `groups * 32` columns, read as `[.., rows, groups * 32]`.
    pub fn mxfp4(dims: &[usize], blocks: Vec<u8>, scales: Vec<u8>) -> Result<Self, String> {
        let Some((&groups, outer)) = dims.split_last().filter(|(_, o)| !o.is_empty()) else {
            return Err(format!("MXFP4 scales of shape {dims:?}"));
        };
        let rows: usize = outer.iter().product();
        if scales.len() != rows * groups || blocks.len() != scales.len() * mxfp4::GROUP_BYTES {
            return Err(format!(
                "MXFP4: {} block bytes and {} scales for rows {rows} of {groups} groups",
                blocks.len(),
                scales.len()
            ));
        }
        let mut logical = outer.to_vec();
        logical.push(groups * 32);
        Ok(QuantMatrix {
            rows,
            cols: groups * 32,
            dims: logical,
            data: QuantData::Mxfp4 { blocks, scales },
        })
    }

    /// The stored format: a ggml type's name, `nf4`, `fp4`, `bf16` or `f16`.
    pub fn format(&self) -> &'static str {
        match &self.data {
            QuantData::Ggml { kind, .. } => kind.name,
            QuantData::Bnb4 { state, .. } => state.code.name(),
            QuantData::Bf16(_) => "bf16",
            QuantData::F16(_) => "f16",
            QuantData::Mxfp4 { .. } => "MXFP4",
        }
    }

    /// Bytes held in memory.
    pub fn stored_bytes(&self) -> usize {
        match &self.data {
            QuantData::Ggml { bytes, .. } => bytes.len(),
            QuantData::Bnb4 { packed, absmax, .. } => packed.len() + 4 * absmax.len(),
            QuantData::Bf16(v) => 2 * v.len(),
            QuantData::F16(v) => 2 * v.len(),
            QuantData::Mxfp4 { blocks, scales } => blocks.len() + scales.len(),
        }
    }

    /// Rows `first_row..` decoded into `out` (whole rows: `out.len()` a multiple of `cols`).
    pub(crate) fn dequantize_rows(&self, first_row: usize, out: &mut [f32]) {
        match &self.data {
            QuantData::Ggml { kind, bytes } => {
                let row_bytes = bytes.len() / self.rows.max(1);
                let rows = out.len() / self.cols.max(1);
                let start = first_row * row_bytes;
                kind.dequantize(&bytes[start..start + rows * row_bytes], out);
            }
            QuantData::Bnb4 {
                state,
                packed,
                absmax,
            } => bnb4::dequantize_range(state, packed, absmax, first_row * self.cols, out),
            QuantData::Bf16(v) => {
                let (start, len) = (first_row * self.cols, out.len());
                for (o, x) in out.iter_mut().zip(&v[start..start + len]) {
                    *o = x.to_f32();
                }
            }
            QuantData::F16(v) => {
                let (start, len) = (first_row * self.cols, out.len());
                for (o, x) in out.iter_mut().zip(&v[start..start + len]) {
                    *o = x.to_f32();
                }
            }
            QuantData::Mxfp4 { blocks, scales } => {
                let groups = self.cols / 32;
                let (first, count) = (first_row * groups, out.len() / 32);
                let bytes = mxfp4::GROUP_BYTES;
                mxfp4::dequantize_into(
                    &blocks[first * bytes..(first + count) * bytes],
                    &scales[first..first + count],
                    out,
                );
            }
        }
    }

    /// The decoded matrix, row-major, into `out` (`rows * cols` values).
    pub fn dequantize_into(&self, out: &mut [f32]) {
        out.par_chunks_mut(ROWS_PER_TASK * self.cols)
            .enumerate()
            .for_each(|(task, chunk)| self.dequantize_rows(task * ROWS_PER_TASK, chunk));
    }

    /// Rows `first_row..` decoded into `out` as `T` (whole rows), a block of rows per parallel task.
    pub(crate) fn decode_rows_as<T: Real>(&self, first_row: usize, out: &mut [T]) {
        out.par_chunks_mut(ROWS_PER_TASK * self.cols)
            .enumerate()
            .for_each(|(task, chunk)| {
                let mut decoded = vec![0.0f32; chunk.len()];
                self.dequantize_rows(first_row + task * ROWS_PER_TASK, &mut decoded);
                for (dst, v) in chunk.iter_mut().zip(decoded) {
                    *dst = T::from_f64(f64::from(v));
                }
            });
    }

    /// The rows `ids` (an embedding lookup) decoded into `out`, one row of `cols` values each.
    pub(crate) fn decode_picked_rows(&self, ids: &[u32], out: &mut [f32]) -> Result<(), String> {
        if let Some(id) = ids.iter().find(|&&id| id as usize >= self.rows) {
            return Err(format!(
                "token id {id} is outside the {}-row embedding",
                self.rows
            ));
        }
        out.par_chunks_mut(self.cols)
            .zip(ids)
            .for_each(|(row, &id)| self.dequantize_rows(id as usize, row));
        Ok(())
    }

    /// The decoded matrix as a tensor of its `dims` in `dtype` on `device`.
    pub fn to_tensor(&self, dtype: DType, device: &Device) -> candle_core::Result<Tensor> {
        self.rows_tensor(0, self.rows, dtype, device)?
            .reshape(self.dims.as_slice())
    }

    /// Rows `first..first + rows` decoded as a `[rows, cols]` tensor in `dtype` on `device`.
    pub fn rows_tensor(
        &self,
        first: usize,
        rows: usize,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        let mut values = vec![0.0f32; rows * self.cols];
        self.decode_rows_as(first, &mut values);
        Tensor::from_vec(values, (rows, self.cols), &Device::Cpu)?
            .to_dtype(dtype)?
            .to_device(device)
    }
}

/// `x W^T` for a quantized frozen `W` (rows `first..first + rows` of a matrix: one expert's), decoded for
/// the product and again for the input gradient `g W`.
#[derive(Clone)]
pub struct QuantLinear {
    pub(crate) matrix: Arc<QuantMatrix>,
    /// The dtype the decoded weight is computed in (the model's).
    pub(crate) dtype: DType,
    first: usize,
    rows: usize,
}

impl QuantLinear {
    /// The whole matrix.
    pub fn new(matrix: Arc<QuantMatrix>, dtype: DType) -> Self {
        let rows = matrix.rows;
        QuantLinear {
            matrix,
            dtype,
            first: 0,
            rows,
        }
    }

    /// Rows `first..first + rows` of `matrix`.
    pub fn rows(matrix: Arc<QuantMatrix>, dtype: DType, first: usize, rows: usize) -> Self {
        QuantLinear {
            matrix,
            dtype,
            first,
            rows,
        }
    }

    pub fn out_features(&self) -> usize {
        self.rows
    }

    pub fn in_features(&self) -> usize {
        self.matrix.cols
    }

    /// The decoded `[out, in]` weight.
    fn weight(&self, device: &Device) -> candle_core::Result<Tensor> {
        self.matrix
            .rows_tensor(self.first, self.rows, self.dtype, device)
    }

    /// `x [.., in] -> [.., out]`.
    pub fn forward(&self, x: &Tensor) -> crate::error::Result<Tensor> {
        let x = x.contiguous()?;
        if !x.track_op() {
            let w = self.weight(x.device())?;
            return Ok(x.broadcast_matmul(&w.t()?)?);
        }
        Ok(x.apply_op1(self.clone())?)
    }

    fn product<S: BackendStorage>(
        &self,
        storage: &S,
        layout: &Layout,
        device: &Device,
        pick: impl Fn(&Storage) -> Option<&S>,
    ) -> candle_core::Result<(S, Shape)> {
        let w_t = self.weight(device)?.t()?;
        let (weight, weight_layout) = w_t.storage_and_layout();
        let weight = pick(&weight).ok_or_else(|| {
            candle_core::Error::Msg("quantized linear: the weight is on another device".into())
        })?;
        crate::frozen::matmul_storage(storage, layout, weight, weight_layout)
    }
}

impl CustomOp1 for QuantLinear {
    fn name(&self) -> &'static str {
        "quantized-linear"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        self.product(storage, layout, &Device::Cpu, |s| match s {
            Storage::Cpu(s) => Some(s),
            _ => None,
        })
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        storage: &candle_core::CudaStorage,
        layout: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        let device = Device::Cuda(storage.device().clone());
        self.product(storage, layout, &device, |s| match s {
            Storage::Cuda(s) => Some(s),
            _ => None,
        })
    }

    fn bwd(
        &self,
        _arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let w = self.weight(grad.device())?;
        Ok(Some(grad.broadcast_matmul(&w)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows decoded alone are the rows of the whole decoded matrix.
    #[test]
    fn rows_decode_as_the_whole_matrix() {
        let (rows, cols) = (40, 64);
        let values: Vec<f32> = (0..rows * cols)
            .map(|k| ((k as f32) * 0.71).sin())
            .collect();
        let bytes = dn_model::gguf_write::encode(&values, dn_model::gguf_write::TensorType::Q8_0);
        let q = QuantMatrix::ggml(GgmlType::of(8).unwrap(), rows, cols, bytes).unwrap();
        let mut w = vec![0.0f32; rows * cols];
        q.dequantize_into(&mut w);
        let mut part = vec![0.0f32; 3 * cols];
        q.dequantize_rows(17, &mut part);
        assert_eq!(part, w[17 * cols..20 * cols]);
        assert!(w.iter().zip(&values).all(|(a, b)| (a - b).abs() < 0.01));
        assert_eq!(q.format(), "Q8_0");
        assert_eq!(q.stored_bytes(), rows * cols / 32 * 34);
    }
}
