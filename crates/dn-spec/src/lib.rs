//! The vocabulary of a job's options, parsed once where a value enters dn (a CLI flag, an API body, a
//! stored job config, a settings file) and carried typed through every layer below, which never parses
//! the strings again. Each option's names, default and parse live here, once; serialized, each value is
//! the string the wire and stored configs have always held, so the wire format does not change.
//!
//! Pure: serde only, no I/O.
//!
//! `TrainOn`, `LrSchedule` and `DataFormat` are closed enums written once by the `choice!` macro (names,
//! default, parse, serde as the same strings); `LoraTargets` is `all-linear` or known projection names;
//! `DeviceSpec` is `auto | cpu | cuda[:N]`; `defaults` holds every option's default and bound, and the
//! deployment's `Limits`. An unknown value is an error naming the option, never a fallback.

mod choice;
pub mod defaults;
mod device;
mod error;
mod targets;

pub use choice::{BaseQuantization, DataFormat, LrSchedule, Tracker, TrainOn};
pub use defaults::Limits;
pub use device::DeviceSpec;
pub use error::{Error, Result};
pub use targets::{ALL_LINEAR, LoraTargets};
