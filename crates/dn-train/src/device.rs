//! Where training runs: `cpu`, `cuda` / `cuda:N`, or `auto` (the first GPU when this build has CUDA and one
//! is present, else the CPU), and the precision each uses: f32 on CPU; bf16 base weights with f32 LoRA,
//! norms, softmax and loss on CUDA.

use candle_core::{DType, Device};

use crate::error::{Error, Result};

/// The device `spec` names. `auto` is the first GPU when this build has CUDA and a GPU is usable (the
/// driver loads, initialises and sees one; the CUDA libraries are present), else the CPU; `cuda[:N]`
/// without a usable GPU is an error that says why.
pub fn select_device(spec: &str) -> Result<Device> {
    let spec = spec.trim();
    let expected = || {
        Error::invalid(
            "device",
            format!("{spec:?}: expected cpu, cuda, cuda:N or auto"),
        )
    };
    match spec {
        "cpu" => Ok(Device::Cpu),
        "auto" | "" => match cuda::usable(0) {
            Ok(()) => new_cuda(spec, 0),
            Err(reason) => {
                tracing::debug!("--device auto: the CPU ({reason})");
                Ok(Device::Cpu)
            }
        },
        _ => {
            let ordinal = match spec.strip_prefix("cuda") {
                Some("") => 0,
                Some(rest) => rest
                    .strip_prefix(':')
                    .and_then(|n| n.parse::<usize>().ok())
                    .ok_or_else(expected)?,
                None => return Err(expected()),
            };
            cuda::usable(ordinal)
                .map_err(|reason| Error::invalid("device", format!("{spec}: {reason}")))?;
            new_cuda(spec, ordinal)
        }
    }
}

/// candle's CUDA device; a panic inside it (a CUDA library that fails to load) becomes an error.
fn new_cuda(spec: &str, ordinal: usize) -> Result<Device> {
    match std::panic::catch_unwind(|| Device::new_cuda(ordinal)) {
        Ok(device) => Ok(device?),
        Err(panic) => {
            let what = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "CUDA failed to start".into());
            Err(Error::invalid("device", format!("{spec}: {what}")))
        }
    }
}

#[cfg(not(feature = "cuda"))]
mod cuda {
    pub fn usable(_ordinal: usize) -> std::result::Result<(), String> {
        Err("this dn was built without CUDA (cargo feature `cuda`)".into())
    }
}

/// Whether CUDA can run here, found by loading the driver library at run time (a CUDA build of dn
/// loads its CUDA libraries at run time too, so it starts, serves and trains on the CPU without them).
#[cfg(feature = "cuda")]
mod cuda {
    use std::ffi::{CStr, c_char, c_int, c_uint};
    use std::sync::OnceLock;

    use libloading::Library;

    /// The libraries candle opens when it creates a CUDA device, besides the driver.
    const LIBRARIES: [&str; 3] = ["cublas", "cublasLt", "curand"];

    fn open(name: &str, versions: &[&str]) -> std::result::Result<Library, String> {
        let mut first = String::new();
        for version in versions {
            let file = format!("lib{name}.so{version}");
            // SAFETY: loading a CUDA library runs its initialisers, which have no preconditions.
            match unsafe { Library::new(&file) } {
                Ok(lib) => return Ok(lib),
                // libloading's own text is "dlopen failed"; dlerror()'s is its source.
                Err(e) if first.is_empty() => {
                    first = std::error::Error::source(&e).map_or(e.to_string(), |s| s.to_string())
                }
                Err(_) => {}
            }
        }
        Err(format!(
            "lib{name}.so{} cannot be loaded ({first}); install it or put its directory on LD_LIBRARY_PATH",
            versions[0]
        ))
    }

    /// The driver's name for a `CUresult`.
    fn error_name(driver: &Library, code: c_int) -> String {
        // SAFETY: `cuGetErrorName(CUresult, const char**)` as the CUDA driver API declares it.
        unsafe {
            let Ok(f) = driver.get::<unsafe extern "C" fn(c_int, *mut *const c_char) -> c_int>(
                b"cuGetErrorName\0",
            ) else {
                return format!("CUDA error {code}");
            };
            let mut name: *const c_char = std::ptr::null();
            if f(code, &mut name) != 0 || name.is_null() {
                return format!("CUDA error {code}");
            }
            format!("{} ({code})", CStr::from_ptr(name).to_string_lossy())
        }
    }

    /// The number of GPUs the driver sees, or why there are none.
    fn probe() -> std::result::Result<usize, String> {
        let driver = open("cuda", &[".1", ""])
            .map_err(|e| format!("no usable CUDA GPU: the NVIDIA driver's {e}"))?;
        // SAFETY: `cuInit(unsigned)` and `cuDeviceGetCount(int*)` as the CUDA driver API declares them.
        let count = unsafe {
            let init = driver
                .get::<unsafe extern "C" fn(c_uint) -> c_int>(b"cuInit\0")
                .map_err(|e| format!("no usable CUDA GPU: libcuda has no cuInit ({e})"))?;
            let rc = init(0);
            if rc != 0 {
                return Err(format!(
                    "no usable CUDA GPU: cuInit failed with {}",
                    error_name(&driver, rc)
                ));
            }
            let get_count = driver
                .get::<unsafe extern "C" fn(*mut c_int) -> c_int>(b"cuDeviceGetCount\0")
                .map_err(|e| {
                    format!("no usable CUDA GPU: libcuda has no cuDeviceGetCount ({e})")
                })?;
            let mut count: c_int = 0;
            let rc = get_count(&mut count);
            if rc != 0 {
                return Err(format!(
                    "no usable CUDA GPU: cuDeviceGetCount failed with {}",
                    error_name(&driver, rc)
                ));
            }
            count.max(0) as usize
        };
        for name in LIBRARIES {
            open(name, &[".13", "", ".12"]).map_err(|e| format!("no usable CUDA GPU: {e}"))?;
        }
        // The driver stays loaded for the process, as candle will open it again.
        std::mem::forget(driver);
        Ok(count)
    }

    pub fn usable(ordinal: usize) -> std::result::Result<(), String> {
        static PROBE: OnceLock<std::result::Result<usize, String>> = OnceLock::new();
        let count = PROBE.get_or_init(probe).clone()?;
        if ordinal < count {
            Ok(())
        } else {
            Err(format!(
                "no usable CUDA GPU: the driver sees {count} GPU(s), so there is no cuda:{ordinal}"
            ))
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
        // Without a GPU (this machine, and CI): auto is the CPU, cuda says why not.
        let e = select_device("cuda:1").unwrap_err().to_string();
        assert!(
            e.contains("cuda:1: this dn was built without CUDA")
                || e.contains("no usable CUDA GPU"),
            "{e}"
        );
    }
}
