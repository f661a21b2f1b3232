//! `x @ W^T` for a frozen weight `W` whose backward returns only the input gradient `g @ W`.
//! candle's matmul backward always computes the weight gradient as well (a full extra matmul and a
//! weight-sized buffer per use), which a LoRA trainer never needs for base weights.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Storage, Tensor};

use crate::error::Result;

struct FrozenLinear {
    /// `[in, out]`, i.e. `W^T`, so the forward is a plain matmul.
    weight_t: Tensor,
    weight: Tensor,
}

/// `x @ W^T` straight on the input's storage: one matrix product (the one candle's matmul would run on
/// the same layouts), no copy of the input or of the result.
pub(crate) fn matmul_storage<S: BackendStorage>(
    x: &S,
    layout: &Layout,
    weight_t: &S,
    weight_layout: &Layout,
) -> candle_core::Result<(S, Shape)> {
    if !layout.is_contiguous() {
        candle_core::bail!("frozen linear: input must be contiguous");
    }
    let k = layout.dims().last().copied().unwrap_or(1);
    let (wk, n) = weight_layout.shape().dims2()?;
    if wk != k {
        candle_core::bail!("frozen linear: input width {k}, weight expects {wk}");
    }
    let m = layout.shape().elem_count() / k.max(1);
    let rows = Layout::contiguous_with_offset((m, k), layout.start_offset());
    let y = x.matmul(weight_t, (1, m, n, k), &rows, weight_layout)?;
    let mut dims = layout.dims().to_vec();
    if let Some(last) = dims.last_mut() {
        *last = n;
    }
    Ok((y, Shape::from(dims)))
}

/// A copy of a contiguous tensor's storage with its shape: what a custom op's forward returns when the
/// result was computed with tensor ops.
pub(crate) fn owned_storage(y: &Tensor) -> candle_core::Result<(Storage, Shape)> {
    let shape = y.shape().clone();
    let (storage, layout) = y.storage_and_layout();
    if !layout.is_contiguous() || layout.start_offset() != 0 {
        candle_core::bail!("custom op: the result must be a whole contiguous tensor");
    }
    let owned = match &*storage {
        Storage::Cpu(s) => Storage::Cpu(s.clone()),
        #[cfg(feature = "cuda")]
        Storage::Cuda(s) => Storage::Cuda(s.try_clone(layout)?),
        _ => candle_core::bail!("custom op: unsupported device"),
    };
    Ok((owned, shape))
}

impl CustomOp1 for FrozenLinear {
    fn name(&self) -> &'static str {
        "frozen-linear"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (weight, weight_layout) = self.weight_t.storage_and_layout();
        match &*weight {
            Storage::Cpu(w) => matmul_storage(storage, layout, w, weight_layout),
            _ => candle_core::bail!("frozen linear: the weight is not on the cpu"),
        }
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        storage: &candle_core::CudaStorage,
        layout: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        let (weight, weight_layout) = self.weight_t.storage_and_layout();
        match &*weight {
            Storage::Cuda(w) => matmul_storage(storage, layout, w, weight_layout),
            _ => candle_core::bail!("frozen linear: the weight is not on the gpu"),
        }
    }

    fn bwd(
        &self,
        _arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(grad.broadcast_matmul(&self.weight)?))
    }
}

/// A frozen `[out, in]` weight applied as `x @ W^T`.
#[derive(Clone)]
pub struct Frozen {
    weight: Tensor,
    weight_t: Tensor,
}

impl Frozen {
    pub fn new(weight: &Tensor) -> Result<Self> {
        let weight = weight.detach();
        // A transposed view: the matmul reads it in place, no second copy of the weight.
        let weight_t = weight.t()?;
        Ok(Frozen { weight, weight_t })
    }

    /// `x [.., in] -> [.., out]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = x.contiguous()?;
        if !x.track_op() {
            return Ok(x.broadcast_matmul(&self.weight_t)?);
        }
        Ok(x.apply_op1(FrozenLinear {
            weight_t: self.weight_t.clone(),
            weight: self.weight.clone(),
        })?)
    }

    /// `[out, in]`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    pub fn out_features(&self) -> usize {
        self.weight.dims()[0]
    }

    pub fn in_features(&self) -> usize {
        self.weight.dims()[1]
    }
}

/// A projection's frozen base weight: dense, or kept in its stored quantization.
#[derive(Clone)]
pub enum FrozenBase {
    Dense(Frozen),
    Quantized(crate::quant::QuantLinear),
}

impl FrozenBase {
    /// `x [.., in] -> [.., out]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            FrozenBase::Dense(f) => f.forward(x),
            FrozenBase::Quantized(q) => q.forward(x),
        }
    }

    pub fn out_features(&self) -> usize {
        match self {
            FrozenBase::Dense(f) => f.out_features(),
            FrozenBase::Quantized(q) => q.out_features(),
        }
    }

    pub fn in_features(&self) -> usize {
        match self {
            FrozenBase::Dense(f) => f.in_features(),
            FrozenBase::Quantized(q) => q.in_features(),
        }
    }

    /// Rows `ids` of the `[out, in]` weight (an embedding lookup) as `[ids, in]`; a quantized weight decodes
    /// those rows only.
    pub fn rows(&self, ids: &Tensor) -> Result<Tensor> {
        match self {
            FrozenBase::Dense(f) => Ok(f.weight().index_select(ids, 0)?),
            FrozenBase::Quantized(q) => {
                let device = ids.device();
                let ids = ids.to_vec1::<u32>()?;
                let cols = q.matrix.cols;
                let mut values = vec![0.0f32; ids.len() * cols];
                q.matrix
                    .decode_picked_rows(&ids, &mut values)
                    .map_err(candle_core::Error::Msg)?;
                let rows = Tensor::from_vec(values, (ids.len(), cols), &candle_core::Device::Cpu)?;
                Ok(rows.to_dtype(q.dtype)?.to_device(device)?)
            }
        }
    }

    /// The dense `[out, in]` weight (`None` when kept quantized).
    pub fn dense(&self) -> Option<&Tensor> {
        match self {
            FrozenBase::Dense(f) => Some(f.weight()),
            FrozenBase::Quantized(_) => None,
        }
    }

    /// The quantized weight (`None` when dense).
    pub fn quantized(&self) -> Option<&crate::quant::QuantMatrix> {
        match self {
            FrozenBase::Dense(_) => None,
            FrozenBase::Quantized(q) => Some(&q.matrix),
        }
    }
}
