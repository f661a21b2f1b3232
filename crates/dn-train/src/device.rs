//! Where training runs: `cpu`, `cuda` / `cuda:N`, or `auto` (the first GPU when this build has CUDA and one
//! is present, else the CPU), and the precision each uses: f32 on CPU; bf16 base weights with f32 LoRA,
//! norms, softmax and loss on CUDA.

use candle_core::{DType, Device};

use crate::error::{Error, Result};

pub fn select_device(spec: &str) -> Result<Device> {
    let spec = spec.trim();
    match spec {
        "cpu" => Ok(Device::Cpu),
        "auto" | "" => {
            if candle_core::utils::cuda_is_available() {
                Ok(Device::new_cuda(0)?)
            } else {
                Ok(Device::Cpu)
            }
        }
        _ => {
            let ordinal = match spec.strip_prefix("cuda") {
                Some("") => 0,
                Some(rest) => rest
                    .strip_prefix(':')
                    .and_then(|n| n.parse::<usize>().ok())
                    .ok_or_else(|| {
                        Error::invalid(
                            "device",
                            format!("{spec:?}: expected cpu, cuda, cuda:N or auto"),
                        )
                    })?,
                None => {
                    return Err(Error::invalid(
                        "device",
                        format!("{spec:?}: expected cpu, cuda, cuda:N or auto"),
                    ));
                }
            };
            if !candle_core::utils::cuda_is_available() {
                return Err(Error::invalid(
                    "device",
                    format!(
                        "{spec}: this dn was built without CUDA (cargo feature `cuda`) or no GPU is visible"
                    ),
                ));
            }
            Ok(Device::new_cuda(ordinal)?)
        }
    }
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
    fn cpu_and_auto_work_here_and_bad_specs_name_the_field() {
        assert!(select_device("cpu").unwrap().is_cpu());
        assert_eq!(base_dtype(&select_device("auto").unwrap()), DType::F32);
        let e = select_device("tpu").unwrap_err().to_string();
        assert!(e.starts_with("device:"), "{e}");
    }
}
