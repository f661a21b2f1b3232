//! Connecting, pool setup and migrations for both dialects.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{AnyPool, Executor};

use crate::error::{Error, Result};
use crate::wake::WakeUps;
use crate::write_tx::WriteTx;

/// How long a call waits for a pooled connection by default (`db_acquire_timeout_seconds`).
pub const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// Which database a [`SqlStore`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// The [`crate::JobStore`] over SQLite or PostgreSQL.
#[derive(Debug, Clone)]
pub struct SqlStore {
    pub(crate) pool: AnyPool,
    pub(crate) dialect: Dialect,
    pub(crate) wake: Arc<WakeUps>,
}

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

impl SqlStore {
    /// Opens (creating if needed) the embedded SQLite database `dn.db` in `data_dir`.
    pub async fn open_data_dir(data_dir: &Path) -> Result<Self> {
        Self::open_data_dir_with(data_dir, DEFAULT_ACQUIRE_TIMEOUT).await
    }

    /// [`open_data_dir`](Self::open_data_dir) with its own limit on the wait for a pooled connection.
    pub async fn open_data_dir_with(data_dir: &Path, acquire_timeout: Duration) -> Result<Self> {
        let config_error = |e: String| Error::Database(sqlx::Error::Configuration(e.into()));
        if !data_dir.exists() {
            // Owner only: it holds the key hashes, job data and checkpoints.
            let mut builder = std::fs::DirBuilder::new();
            builder.recursive(true);
            #[cfg(unix)]
            std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
            builder.create(data_dir).map_err(|e| {
                config_error(format!(
                    "cannot create data dir {}: {e}",
                    data_dir.display()
                ))
            })?;
        }
        let path = data_dir.join("dn.db");
        owner_only_file(&path).map_err(|e| config_error(format!("{}: {e}", path.display())))?;
        Self::connect_with(
            &format!("sqlite://{}?mode=rwc", path.display()),
            acquire_timeout,
        )
        .await
    }

    /// Connects to `sqlite://PATH[?mode=rwc]` or `postgres://...` and runs pending migrations; a call
    /// waits at most [`DEFAULT_ACQUIRE_TIMEOUT`] for a pooled connection.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(url, DEFAULT_ACQUIRE_TIMEOUT).await
    }

    /// [`connect`](Self::connect) with its own limit on the wait for a pooled connection: past it, a
    /// call fails with `PoolTimedOut` (the API answers 503 with Retry-After) instead of hanging while the
    /// database is down.
    pub async fn connect_with(url: &str, acquire_timeout: Duration) -> Result<Self> {
        install_default_drivers();
        let dialect = if url.starts_with("sqlite:") {
            Dialect::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Dialect::Postgres
        } else {
            return Err(Error::UnsupportedUrl(redact(url)));
        };
        let options = AnyPoolOptions::new().acquire_timeout(acquire_timeout);
        let pool = match dialect {
            Dialect::Sqlite => {
                options
                    .max_connections(8)
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            conn.execute(
                                "PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 30000; \
                                 PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;",
                            )
                            .await?;
                            Ok(())
                        })
                    })
                    .connect(url)
                    .await?
            }
            Dialect::Postgres => options.max_connections(16).connect(url).await?,
        };
        match dialect {
            Dialect::Sqlite => SQLITE_MIGRATIONS.run(&pool).await?,
            Dialect::Postgres => POSTGRES_MIGRATIONS.run(&pool).await?,
        }
        Ok(SqlStore {
            pool,
            dialect,
            wake: WakeUps::new(dialect, url),
        })
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Starts a write transaction. On SQLite it takes the write lock up front (`BEGIN IMMEDIATE`), so
    /// concurrent writers queue on the busy timeout instead of failing on a stale read snapshot.
    pub(crate) async fn begin_write(&self) -> Result<WriteTx> {
        let statement = match self.dialect {
            Dialect::Sqlite => "BEGIN IMMEDIATE",
            Dialect::Postgres => "BEGIN",
        };
        WriteTx::begin(&self.pool, statement).await
    }

    /// For tests and first-time setup: creates an empty database named `name` (letters, digits and `_`)
    /// on the PostgreSQL server of `admin_url` and returns the URL that points at it.
    pub async fn create_postgres_database(admin_url: &str, name: &str) -> Result<String> {
        use sqlx::Connection;
        install_default_drivers();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(Error::Database(sqlx::Error::Configuration(
                format!("invalid database name {name:?}: letters, digits and _ only").into(),
            )));
        }
        let (base, _) = admin_url
            .rsplit_once('/')
            .filter(|(base, _)| base.contains("://"))
            .ok_or_else(|| Error::UnsupportedUrl(redact(admin_url)))?;
        let mut admin = sqlx::AnyConnection::connect(admin_url).await?;
        admin
            .execute(format!("CREATE DATABASE {name}").as_str())
            .await?;
        admin.close().await?;
        Ok(format!("{base}/{name}"))
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// The url without its password, for error messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            format!("{}://***{}", &url[..scheme_end], &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// Creates `path` readable and writable by its owner only, or makes an existing one so (SQLite gives its
/// WAL and shared-memory files the database file's permissions). An existing database is never opened here:
/// closing a descriptor of it would drop the POSIX locks this process's SQLite connections hold on it.
fn owner_only_file(path: &Path) -> std::io::Result<()> {
    if !path.exists() {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        match options.open(path) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(e),
            _ => {}
        }
    }
    #[cfg(unix)]
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    Ok(())
}
