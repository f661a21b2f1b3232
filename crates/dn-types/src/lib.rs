//! Wire types of the `dn` HTTP API (JSON-compatible with the reference platform's SDK), artifact refs
//! (`org/name@version`), and the validation that turns a create-job request into a checked [`SftJobSpec`].
//!
//! This crate is pure: no I/O, no async runtime.
//!
//! The wire types follow the reference SDK's pydantic models field for field: requests deny unknown fields,
//! responses omit nulls, option fields stay strings on the wire. Refs `[org/]name@version` follow the one
//! name/version rule every registry uses. `validate_sft_request` turns a request into a checked `SftJobSpec`
//! and `validate_preview_request` a preview into a `PreviewSpec`, typed with dn-spec's vocabulary and
//! `ArtifactRef`s; `SftConfig` is what `TrainingJob.config` holds, and the worker reads it back with
//! `SftConfig::from_map`, which names the field of a value this build does not know.

mod error;
mod extensions;
mod job;
mod preview;
mod refs;
mod registry;
mod spec;

pub use error::{Error, Result};
pub use extensions::{TrainingExtras, validate_extras};
pub use job::*;
pub use preview::*;
pub use refs::{ArtifactKind, ArtifactRef, validate_name, validate_version};
pub use registry::*;
pub use spec::{SftConfig, SftDefaults, SftJobSpec, SftLimits, validate_sft_request};
