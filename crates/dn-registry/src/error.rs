use dn_types::ArtifactKind;

/// The one error type of `dn-registry`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{kind} {reference} not found")]
    NotFound {
        kind: ArtifactKind,
        reference: String,
    },
    #[error("file '{path}' not found in {kind} {reference}")]
    FileNotFound {
        kind: ArtifactKind,
        reference: String,
        path: String,
    },
    /// No committed checkpoint `name` in the job (or no such file in it).
    #[error("checkpoint '{name}' of training job {job_id} not found{}", file.as_ref().map(|f| format!(" (file '{f}')")).unwrap_or_default())]
    CheckpointNotFound {
        job_id: String,
        name: String,
        file: Option<String>,
    },
    /// The version exists with different content: versions are immutable.
    #[error(
        "{kind} {reference} already exists with different content ({existing}); versions are immutable: \
         push a new version"
    )]
    Conflict {
        kind: ArtifactKind,
        reference: String,
        existing: String,
    },
    /// The upload is malformed; `file` names the file (or field) at fault.
    #[error("{file}: {message}")]
    Invalid { file: String, message: String },
    #[error("upload too large: {size} bytes exceeds the limit of {limit} bytes (max_upload_bytes)")]
    TooLarge { size: u64, limit: u64 },
    #[error("storage configuration: {0}")]
    Config(String),
    #[error("storage error: {0}")]
    Storage(#[from] object_store::Error),
}

impl Error {
    /// Storage could not be reached or could not do the operation, after the client's retries (refused
    /// connections, timeouts, 5xx answers, a local disk that is full or failing): the infrastructure's
    /// trouble, not the caller's input. Not found, conflicts, refused permissions and bad input are not.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            Error::Storage(
                object_store::Error::Generic { .. } | object_store::Error::JoinError { .. }
            )
        )
    }

    pub fn invalid(file: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Invalid {
            file: file.into(),
            message: message.into(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
