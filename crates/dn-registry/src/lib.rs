//! Registries of datasets and capabilities, addressed as `org/NAME@VERSION`, over `object_store` (a local
//! directory by default, S3-compatible storage by configuration).
//!
//! Layout: file contents are stored once under `blobs/sha256/<hex>`; each pushed version is one manifest
//! object (`datasets/<org>/<name>/<version>.json`, `capabilities/...`) written last and only if absent, so a
//! version exists exactly when its manifest does, and never changes afterwards.
//!
//! Pushes arrive as an `Upload` whose large files the receiver spooled to disk (`FileReceiver`, hashing as it
//! goes) and are streamed on to storage. `dataset.yaml` and `capability.yaml` are parsed after a linear scan
//! checked their size and nesting (`yaml`); the SFT system prompt is the entry agent, else the alphabetically
//! first top-level `agents/*.md`, front matter removed, trimmed; every path is checked. `transfer` streams
//! between local files and storage; `runs` holds what jobs leave: checkpoints under
//! `jobs/<org>/<job>/checkpoints/<name>/`, each file streamed up (one put, or a multipart upload above 8 MiB)
//! and down (chunks to disk), committed by a `_COMMITTED` object written last; listings and file streams for
//! the API see committed checkpoints only. S3 requests are retried for `s3_retry_seconds` (time, not a
//! count); `Error::is_unavailable` marks what is left after that (and a local disk's I/O errors) as storage
//! being away; `check_reachable` (readiness) and `check_writable` (a worker deciding whether an outage is
//! over) probe it.

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
