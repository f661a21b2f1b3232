/// The one error type of `dn-store`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("training job {0} not found")]
    NotFound(String),
    /// The job is in a state that forbids the operation (e.g. retry of a running job).
    #[error("{0}")]
    Conflict(String),
    /// The attempt this writer holds is no longer the job's current running attempt.
    #[error("lease lost: job {job_id} attempt {attempt} is no longer owned by this worker")]
    LeaseLost { job_id: String, attempt: i64 },
    #[error("unsupported database url '{0}': expected sqlite:// or postgres://")]
    UnsupportedUrl(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored row could not be decoded (hand-edited database or a bug).
    #[error("corrupt row in {table}: {message}")]
    Corrupt {
        table: &'static str,
        message: String,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
