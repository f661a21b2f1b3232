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
    #[error("tensor error: {0}")]
    Tensor(#[from] candle_core::Error),
}

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
