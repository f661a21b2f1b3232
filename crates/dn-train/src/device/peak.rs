//! Peak dense bf16 tensor throughput of known GPUs, for the MFU estimate (model FLOPs per second over the
//! device's peak). Figures are the vendors' dense (no sparsity) bf16 numbers with fp32 accumulation; a
//! node overrides them with the worker's `peak_tflops` setting, the only source on a CPU.

/// `(name fragment, peak dense bf16 TFLOP/s)`, most specific fragments first.
pub const KNOWN_GPUS: &[(&str, f64)] = &[
    ("GB200", 2500.0),
    ("B200", 2250.0),
    ("H200", 989.0),
    ("H100 PCIe", 756.0),
    ("H100", 989.0),
    ("H800", 989.0),
    ("GH200", 989.0),
    ("A100", 312.0),
    ("A800", 312.0),
    ("L40S", 362.0),
    ("L40", 181.0),
    ("L4", 121.0),
    ("A10", 125.0),
    ("RTX 6000 Ada", 364.0),
    ("RTX A6000", 155.0),
    ("RTX 5090", 210.0),
    ("RTX 4090", 165.0),
    ("RTX 3090", 71.0),
];

/// The peak FLOP/s of a GPU by its name (as the driver reports it), if known.
pub fn known_peak_flops(gpu_name: &str) -> Option<f64> {
    KNOWN_GPUS
        .iter()
        .find(|(fragment, _)| gpu_name.contains(fragment))
        .map(|(_, tflops)| tflops * 1e12)
}

/// The peak FLOP/s of the device labelled `device` (as [`super::device_label`] writes it: `cuda:N`): its
/// GPU's from [`KNOWN_GPUS`]; `None` on a CPU or an unknown GPU.
pub fn peak_flops(device: &str) -> Option<f64> {
    let ordinal: usize = device.strip_prefix("cuda:")?.parse().ok()?;
    let report = super::cuda_report();
    let gpu = report.gpus.iter().find(|g| g.ordinal == ordinal)?;
    known_peak_flops(&gpu.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_as_drivers_report_them() {
        assert_eq!(known_peak_flops("NVIDIA H100 80GB HBM3"), Some(989e12));
        assert_eq!(known_peak_flops("NVIDIA H100 PCIe"), Some(756e12));
        assert_eq!(known_peak_flops("NVIDIA H200"), Some(989e12));
        assert_eq!(known_peak_flops("NVIDIA GeForce RTX 4090"), Some(165e12));
        assert_eq!(known_peak_flops("NVIDIA A10"), Some(125e12));
        assert_eq!(known_peak_flops("NVIDIA L40S"), Some(362e12));
        assert_eq!(known_peak_flops("Some Future GPU"), None);
        assert_eq!(peak_flops("cpu"), None);
    }
}
