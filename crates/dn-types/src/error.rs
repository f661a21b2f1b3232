/// The one error type of `dn-types`: a request or a ref that does not validate.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// A field has a value out of bounds or of the wrong shape; `field` is its JSON path.
    #[error("{field}: {message}")]
    InvalidField { field: String, message: String },
}

impl Error {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::InvalidField {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The JSON path of the offending field.
    pub fn field(&self) -> &str {
        match self {
            Error::InvalidField { field, .. } => field,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
