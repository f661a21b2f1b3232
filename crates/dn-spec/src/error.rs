/// The one error type of `dn-spec`: a value that is not one the option takes, naming the option.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct Error {
    /// The option's name (`train_on`, `lora_target_modules[2]`); callers add their own prefix
    /// (`config.`) with [`Error::within`].
    pub field: String,
    pub message: String,
}

impl Error {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error {
            field: field.into(),
            message: message.into(),
        }
    }

    /// `value` is not among `names`.
    pub fn unknown(field: impl Into<String>, value: &str, names: &[&str]) -> Self {
        Error::new(
            field,
            format!("unknown value {value:?} (one of {})", names.join(", ")),
        )
    }

    /// The same error with its field under `prefix` (`config.` + `train_on`).
    pub fn within(mut self, prefix: &str) -> Self {
        self.field = format!("{prefix}{}", self.field);
        self
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
