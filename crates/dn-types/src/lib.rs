//! Wire types of the `dn` HTTP API (JSON-compatible with the reference platform's SDK), artifact refs
//! (`org/name@version`), and the validation that turns a create-job request into a checked [`SftJobSpec`].
//!
//! This crate is pure: no I/O, no async runtime.

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
