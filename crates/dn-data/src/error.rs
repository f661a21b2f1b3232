/// The one error type of `dn-data`: what was wrong, and where (file, row, field).
#[derive(Debug, Clone, PartialEq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum Error {
    /// One row does not fit any accepted shape; the row is skipped.
    #[error("{file}: row {row}: {message}")]
    Row {
        file: String,
        row: usize,
        message: String,
    },
    /// The whole file is unreadable (missing, wrong format, not UTF-8 where it must be).
    #[error("{file}: {message}")]
    File { file: String, message: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
