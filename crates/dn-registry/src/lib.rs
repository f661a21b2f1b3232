//! Registries of datasets and capabilities, addressed as `org/NAME@VERSION`, over `object_store` (a local
//! directory by default, S3-compatible storage by configuration).
//!
//! Layout: file contents are stored once under `blobs/sha256/<hex>`; each pushed version is one manifest
//! object (`datasets/<org>/<name>/<version>.json`, `capabilities/...`) written last and only if absent, so a
//! version exists exactly when its manifest does, and never changes afterwards.

mod capability;
mod dataset;
mod error;
#[cfg(test)]
mod failing_store;
mod frontmatter;
mod runs;
mod storage;
mod transfer;
mod upload;
mod yaml;

pub use capability::parse_capability;
pub use dataset::parse_dataset;
pub use error::{Error, Result};
pub use frontmatter::strip_front_matter;
pub use runs::{ByteStream, COMMIT_MARKER};
pub use storage::{DEFAULT_S3_RETRY_TIMEOUT, Registry, S3Credentials, StorageConfig};
pub use upload::{
    FileContent, FileReceiver, SPOOL_ABOVE, Upload, UploadFile, sha256_id, validate_relative_path,
};
