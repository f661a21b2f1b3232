//! The one error type of the trainer.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The model (config or weights) cannot be used; names the file.
    #[error("model {path}: {message}")]
    Model { path: String, message: String },
    /// A training option is out of range; names the option.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// A checkpoint cannot be written or read; names the directory.
    #[error("checkpoint {path}: {message}")]
    Checkpoint { path: String, message: String },
    /// A merged model cannot be written; names the file or directory.
    #[error("{path}: {message}")]
    Export { path: String, message: String },
    /// Training stopped at a step boundary because the caller asked it to.
    #[error("stopped at step {step}")]
    Stopped { step: u64 },
    /// The device ran out of memory in a forward/backward pass; says what to lower.
    #[error(
        "out of memory on {device} in a pass of up to {tokens_per_pass} tokens ({message}): lower \
         tokens_per_pass (--tokens-per-pass), max_sequence_length or batch_size, or free the device"
    )]
    OutOfMemory {
        device: String,
        tokens_per_pass: usize,
        message: String,
    },
    #[error("tensor error: {0}")]
    Tensor(#[from] candle_core::Error),
}

/// What CUDA, cuBLAS and the host allocator say when memory runs out.
const OUT_OF_MEMORY_MARKERS: [&str; 4] = [
    "CUDA_ERROR_OUT_OF_MEMORY",
    "CUBLAS_STATUS_ALLOC_FAILED",
    "out of memory",
    "OutOfMemory",
];

impl Error {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn model(path: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Model {
            path: path.into(),
            message: message.into(),
        }
    }

    /// A tensor error that says the device ran out of memory becomes [`Error::OutOfMemory`]; others
    /// pass unchanged.
    pub fn out_of_memory(self, device: &candle_core::Device, tokens_per_pass: usize) -> Self {
        match self {
            Error::Tensor(e)
                if OUT_OF_MEMORY_MARKERS
                    .iter()
                    .any(|m| e.to_string().contains(m)) =>
            {
                Error::OutOfMemory {
                    device: crate::device::device_label(device),
                    tokens_per_pass,
                    message: e.to_string(),
                }
            }
            other => other,
        }
    }

    pub fn checkpoint(path: &std::path::Path, message: impl Into<String>) -> Self {
        Error::Checkpoint {
            path: path.display().to_string(),
            message: message.into(),
        }
    }
}

impl From<dn_arch::Error> for Error {
    fn from(e: dn_arch::Error) -> Self {
        Error::Model {
            path: e.file,
            message: e.message,
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cuda_allocation_failure_becomes_out_of_memory_naming_what_to_lower() {
        let cuda = candle_core::Error::Msg(
            "DriverError(CUDA_ERROR_OUT_OF_MEMORY, \"out of memory\")".into(),
        );
        let e = Error::Tensor(cuda).out_of_memory(&candle_core::Device::Cpu, 8192);
        let text = e.to_string();
        assert!(
            matches!(
                e,
                Error::OutOfMemory {
                    tokens_per_pass: 8192,
                    ..
                }
            ),
            "{text}"
        );
        assert!(
            text.contains("--tokens-per-pass") && text.contains("cpu"),
            "{text}"
        );
        let other = Error::Tensor(candle_core::Error::Msg("shape mismatch".into()));
        assert!(matches!(
            other.out_of_memory(&candle_core::Device::Cpu, 1),
            Error::Tensor(_)
        ));
    }
}
