/// The one error type of `dn-render`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The model's files are missing, unreadable or unsupported.
    #[error("model {path}: {message}")]
    Model { path: String, message: String },
    /// The chat template failed to compile or render.
    #[error("chat template: {0}")]
    Template(String),
    /// The chat template ran past a limit (fuel, output size): the template's fault, not one row's.
    #[error("chat template: {0}")]
    TemplateLimit(String),
    /// The chat template renders a conversation's prefixes inconsistently, so assistant tokens cannot be
    /// located exactly.
    #[error("chat template is not prefix-stable: {0}")]
    NotPrefixStable(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
}

impl From<dn_model::Error> for Error {
    fn from(e: dn_model::Error) -> Self {
        match e {
            dn_model::Error::Model { path, message } => Error::Model { path, message },
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
