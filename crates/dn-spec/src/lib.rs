//! The vocabulary of a job's options, parsed once where a value enters dn (a CLI flag, an API body, a
//! stored job config, a settings file) and carried typed through every layer below, which never parses
//! the strings again. Each option's names, default and parse live here, once; serialized, each value is
//! the string the wire and stored configs have always held, so the wire format does not change.
//!
//! Pure: serde only, no I/O.

mod choice;
pub mod defaults;
mod device;
mod error;
mod targets;

pub use choice::{DataFormat, LrSchedule, TrainOn};
pub use defaults::Limits;
pub use device::DeviceSpec;
pub use error::{Error, Result};
pub use targets::{ALL_LINEAR, LoraTargets};
