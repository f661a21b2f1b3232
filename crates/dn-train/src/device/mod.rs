//! Where training runs: `cpu`, `cuda` / `cuda:N`, or `auto` (the first GPU when this build has CUDA and one
//! is usable, else the CPU), and the precision each uses: f32 on CPU; bf16 base weights with f32 LoRA,
//! norms, softmax and loss on CUDA.

#[cfg(feature = "cuda")]
mod cuda;
mod peak;
// The library lists and their lookup are used by the CUDA probe only (and tested everywhere).
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
mod probe;

use std::sync::{Mutex, OnceLock};

use candle_core::{DType, Device};
pub use dn_spec::DeviceSpec;

pub use peak::{KNOWN_GPUS, known_peak_flops, peak_flops};
pub use probe::{CudaReport, GpuInfo, LibraryStatus};

use crate::error::{Error, Result};

/// What this node's CUDA probe found, once per process (loading the libraries is not repeated).
pub fn cuda_report() -> &'static CudaReport {
    static REPORT: OnceLock<CudaReport> = OnceLock::new();
    REPORT.get_or_init(|| {
        #[cfg(feature = "cuda")]
        return cuda::probe();
        #[cfg(not(feature = "cuda"))]
        CudaReport::without_cuda()
    })
}

/// Why `auto`'s last choice fell back to the CPU after the probe passed (creating the device failed).
static AUTO_FAILURE: Mutex<Option<String>> = Mutex::new(None);

/// The device `spec` names. `auto` is the first GPU when this build has CUDA and a GPU is usable (the
/// driver loads, initialises and sees one; the CUDA libraries load; the device starts), else the CPU;
/// `cuda[:N]` without a usable GPU is an error that says why.
pub fn select_device(spec: DeviceSpec) -> Result<Device> {
    match spec {
        DeviceSpec::Cpu => Ok(Device::Cpu),
        DeviceSpec::Auto => {
            if let Some(reason) = &cuda_report().unusable {
                tracing::debug!("--device auto: the CPU ({reason})");
                return Ok(Device::Cpu);
            }
            let started = new_cuda(0);
            let mut failure = AUTO_FAILURE.lock().unwrap_or_else(|p| p.into_inner());
            *failure = started.as_ref().err().map(|reason| {
                let reason = format!("cuda:0 did not start: {reason}");
                tracing::warn!("--device auto: the CPU, as {reason}");
                reason
            });
            Ok(started.unwrap_or(Device::Cpu))
        }
        DeviceSpec::Cuda(ordinal) => {
            let report = cuda_report();
            if let Some(reason) = &report.unusable {
                return Err(Error::invalid("device", format!("{spec}: {reason}")));
            }
            if ordinal >= report.gpus.len() {
                return Err(Error::invalid(
                    "device",
                    format!(
                        "{spec}: no usable CUDA GPU: the driver sees {} GPU(s), so there is no \
                         cuda:{ordinal}",
                        report.gpus.len()
                    ),
                ));
            }
            if let Some(problem) = report.gpu_problem(ordinal) {
                return Err(Error::invalid("device", format!("{spec}: {problem}")));
            }
            new_cuda(ordinal)
                .map_err(|reason| Error::invalid("device", format!("{spec}: {reason}")))
        }
    }
}

/// What a worker told to train on `spec` should warn about: `auto` on a node whose driver sees a GPU
/// that dn cannot use (a missing library, a device that did not start), so it trains on the CPU.
pub fn device_warning(spec: DeviceSpec) -> Option<String> {
    if spec != DeviceSpec::Auto {
        return None;
    }
    let report = cuda_report();
    let reason = match &report.unusable {
        Some(reason) if report.gpu_unusable() => reason.clone(),
        Some(_) => return None,
        None => AUTO_FAILURE
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()?,
    };
    let reason = reason.trim_start_matches("no usable CUDA GPU: ");
    Some(format!(
        "--device auto trains on the CPU though the driver sees {} GPU(s): {reason}",
        report.gpus.len()
    ))
}

/// candle's CUDA device, prepared for training (see `cuda::prepare`), or why it did not start (a panic
/// inside it, a CUDA library that fails to load, becomes that reason).
fn new_cuda(ordinal: usize) -> std::result::Result<Device, String> {
    let device = match std::panic::catch_unwind(|| Device::new_cuda(ordinal)) {
        Ok(device) => device.map_err(|e| e.to_string())?,
        Err(panic) => {
            return Err(panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "CUDA failed to start".into()));
        }
    };
    #[cfg(feature = "cuda")]
    cuda::prepare(&device).map_err(|e| e.to_string())?;
    Ok(device)
}

/// Bytes the GPU can still give this process (its free memory and what dn's memory pool holds unused);
/// `None` on the CPU or when it cannot be told.
pub(crate) fn cuda_free_memory(device: &Device) -> Option<u64> {
    #[cfg(feature = "cuda")]
    return cuda::free_memory(device);
    #[cfg(not(feature = "cuda"))]
    {
        let _ = device;
        None
    }
}

/// The GPU's memory in use, all processes' (its total less its free memory, as nvidia-smi shows it);
/// `None` on the CPU or when it cannot be told.
pub(crate) fn gpu_memory_used(device: &Device) -> Option<u64> {
    #[cfg(feature = "cuda")]
    return cuda::memory_used(device);
    #[cfg(not(feature = "cuda"))]
    {
        let _ = device;
        None
    }
}

/// Gives the memory dn's pool keeps for reuse back to the GPU's driver: when a job ends, and before a
/// pass that ran out of memory is redone smaller. Nothing on the CPU.
pub fn release_cached_memory(device: &Device) {
    #[cfg(feature = "cuda")]
    if device.is_cuda() {
        cuda::trim(device);
    }
    let _ = device;
}

/// The dtype of the frozen base weights and activations on `device`.
pub fn base_dtype(device: &Device) -> DType {
    if device.is_cuda() {
        DType::BF16
    } else {
        DType::F32
    }
}

/// `cpu` or `cuda:N`, for metrics and logs.
pub fn device_label(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".into(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_and_auto_work_here_and_cuda_says_why_not() {
        assert!(select_device(DeviceSpec::Cpu).unwrap().is_cpu());
        assert_eq!(
            base_dtype(&select_device(DeviceSpec::Auto).unwrap()),
            DType::F32
        );
        // Without a GPU (this machine, and CI): auto is the CPU, cuda says why not, and a CPU node
        // warns about nothing.
        let e = select_device(DeviceSpec::Cuda(1)).unwrap_err().to_string();
        assert!(
            e.contains("cuda:1: this dn was built without CUDA")
                || e.contains("no usable CUDA GPU"),
            "{e}"
        );
        assert_eq!(device_warning(DeviceSpec::Auto), None);
        assert_eq!(device_warning(DeviceSpec::Cpu), None);
        assert!(cuda_report().unusable.is_some());
    }
}
