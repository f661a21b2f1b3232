/// The one error type of `dn-model`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The model's files are missing, unreadable or unsupported.
    #[error("model {path}: {message}")]
    Model { path: String, message: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
