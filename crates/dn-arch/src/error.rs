//! The one error type of the architecture reader.

/// A config that cannot be trained as written; the message names the key, and `file` the config file
/// (or the GGUF file it came from).
#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct Error {
    pub file: String,
    pub message: String,
}

impl Error {
    pub fn new(file: &str, message: impl Into<String>) -> Self {
        Error {
            file: file.to_owned(),
            message: message.into(),
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
