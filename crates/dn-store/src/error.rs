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

impl Error {
    /// The database did not answer or could not take the write: unreachable, its pool exhausted, shutting
    /// down, out of disk or memory. The infrastructure's trouble, not the request's or the job's: callers
    /// answer 503 and retry, workers wait for it to pass.
    pub fn is_unavailable(&self) -> bool {
        let Error::Database(error) = self else {
            return false;
        };
        match error {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::WorkerCrashed => true,
            sqlx::Error::Database(db) => db.code().is_some_and(|code| unavailable_code(&code)),
            _ => false,
        }
    }
}

/// SQLite result codes (the primary code is the low byte of an extended one) and PostgreSQL SQLSTATEs
/// that say the database cannot serve now.
fn unavailable_code(code: &str) -> bool {
    const SQLITE_BUSY: i64 = 5;
    const SQLITE_LOCKED: i64 = 6;
    const SQLITE_NOMEM: i64 = 7;
    const SQLITE_IOERR: i64 = 10;
    const SQLITE_FULL: i64 = 13;
    if let Ok(number) = code.parse::<i64>() {
        return [
            SQLITE_BUSY,
            SQLITE_LOCKED,
            SQLITE_NOMEM,
            SQLITE_IOERR,
            SQLITE_FULL,
        ]
        .contains(&(number & 0xff));
    }
    // 08: connection exception; 53: insufficient resources (disk full, out of memory, too many
    // connections); 57P01-57P03: shutting down or not accepting connections yet.
    code.starts_with("08") || code.starts_with("53") || code.starts_with("57P0")
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
