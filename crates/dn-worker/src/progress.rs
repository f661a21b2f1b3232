//! The progress handle a runner reports through: log entries and metrics appended to the running job,
//! fenced by its lease, and kept in memory while the database is unreachable, up to the lease's deadline.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dn_store::prelude::*;
use dn_store::{Lease, NewLogEntry};
use dn_types::LogLevel;
use serde_json::{Map, Value};
use tracing::warn;

use crate::runner::RunError;

/// Entries kept while the database is unreachable at most; past it, reports wait for the database.
const MAX_BUFFERED_ENTRIES: usize = 10_000;

/// When this attempt's lease runs out, as far as this worker knows: the last renewal that reached the
/// database (taken when it was sent), plus the lease. Until then no peer may take the job over, so the
/// worker may keep training through a database outage.
#[derive(Debug)]
pub(crate) struct LeaseClock {
    renewed: Mutex<Instant>,
    lease: Duration,
}

impl LeaseClock {
    /// A lease granted (or renewed) at `renewed` for `lease`.
    pub fn new(renewed: Instant, lease: Duration) -> Self {
        LeaseClock {
            renewed: Mutex::new(renewed),
            lease,
        }
    }

    /// A renewal sent at `sent` reached the database.
    pub fn renewed(&self, sent: Instant) {
        let mut renewed = self.renewed.lock().unwrap_or_else(|e| e.into_inner());
        *renewed = (*renewed).max(sent);
    }

    /// Time left before a peer may reap the job.
    pub fn remaining(&self) -> Duration {
        let renewed = *self.renewed.lock().unwrap_or_else(|e| e.into_inner());
        (renewed + self.lease).saturating_duration_since(Instant::now())
    }

    pub fn expired(&self) -> bool {
        self.remaining().is_zero()
    }
}

/// What could not be written yet.
#[derive(Debug, Default)]
struct Pending {
    entries: Vec<NewLogEntry>,
    metrics: Option<Map<String, Value>>,
}

/// Appends log entries and metrics to the running job, fenced by its lease.
#[derive(Clone)]
pub struct Progress {
    store: Arc<dyn JobStore>,
    lease: Lease,
    clock: Arc<LeaseClock>,
    pending: Arc<Mutex<Pending>>,
}

/// A log entry; `data` is a JSON object (anything else logs no data).
pub(crate) fn log_entry(
    level: LogLevel,
    message: impl Into<String>,
    data: impl Into<Value>,
) -> NewLogEntry {
    NewLogEntry {
        level,
        message: message.into(),
        data: match data.into() {
            Value::Object(map) => map,
            _ => Map::new(),
        },
    }
}

/// The attempt ends: the database stayed unreachable until the lease's deadline.
fn past_deadline(what: &str, error: &dn_store::Error) -> RunError {
    RunError::Unavailable {
        message: format!(
            "{what}: the database stayed unreachable until the lease ran out: {error}"
        ),
    }
}

impl Progress {
    pub(crate) fn new(store: Arc<dyn JobStore>, lease: Lease, clock: Arc<LeaseClock>) -> Self {
        Progress {
            store,
            lease,
            clock,
            pending: Arc::default(),
        }
    }

    /// Appends one entry; `data` is a map or a `json!({...})` object.
    pub async fn log(
        &self,
        level: LogLevel,
        message: impl Into<String>,
        data: impl Into<Value>,
    ) -> Result<(), RunError> {
        self.report(&[log_entry(level, message, data)], None).await
    }

    /// Asks the store whether this attempt still owns the job (a read, no write): `LeaseLost` when not.
    /// For writes outside the store that must not happen after a takeover, like committing a checkpoint.
    /// While the database is unreachable it asks again, until the lease's deadline.
    pub async fn ensure_lease(&self) -> Result<(), RunError> {
        let mut delay = Duration::from_millis(250);
        loop {
            match self.store.cancel_requested(&self.lease).await {
                Ok(_) => return Ok(()),
                Err(dn_store::Error::LeaseLost { .. }) => return Err(RunError::LeaseLost),
                Err(e) if self.clock.expired() => {
                    return Err(past_deadline("cannot check the job's lease", &e));
                }
                Err(e) if e.is_unavailable() => {
                    warn!(job = %self.lease.job_id, error = %e, "cannot check the job's lease; asking again in {delay:?}");
                    tokio::time::sleep(delay.min(self.clock.remaining())).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                Err(e) => {
                    return Err(RunError::transient(format!(
                        "cannot check the job's lease: {e}"
                    )));
                }
            }
        }
    }

    /// Appends entries and, if given, replaces the job's metrics. While the database is unreachable they
    /// are kept in memory (training goes on) and written, in order, by the next report that gets through;
    /// once the lease's deadline passes without one, the attempt ends (`Unavailable`). A lost lease is
    /// final.
    pub async fn report(
        &self,
        entries: &[NewLogEntry],
        metrics: Option<&Map<String, Value>>,
    ) -> Result<(), RunError> {
        let mut pending = std::mem::take(&mut *self.lock());
        pending.entries.extend_from_slice(entries);
        if let Some(metrics) = metrics {
            pending.metrics = Some(metrics.clone());
        }
        let mut delay = Duration::from_millis(250);
        loop {
            let written = self
                .store
                .append_progress(&self.lease, &pending.entries, pending.metrics.as_ref())
                .await;
            match written {
                Ok(()) => return Ok(()),
                Err(dn_store::Error::LeaseLost { .. }) => return Err(RunError::LeaseLost),
                Err(e) if self.clock.expired() => {
                    return Err(past_deadline("cannot record progress", &e));
                }
                Err(e) if e.is_unavailable() && pending.entries.len() < MAX_BUFFERED_ENTRIES => {
                    warn!(job = %self.lease.job_id, error = %e, buffered = pending.entries.len(), "cannot record progress; kept until the database answers");
                    *self.lock() = pending;
                    return Ok(());
                }
                Err(e) if e.is_unavailable() => {
                    tokio::time::sleep(delay.min(self.clock.remaining())).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                Err(e) => {
                    return Err(RunError::transient(format!("cannot record progress: {e}")));
                }
            }
        }
    }

    /// One try at writing what is kept in memory, whatever the lease's deadline (before the attempt's
    /// outcome is recorded, which the lease fences anyway).
    pub(crate) async fn write_pending(&self) -> dn_store::Result<()> {
        let pending = std::mem::take(&mut *self.lock());
        if pending.entries.is_empty() && pending.metrics.is_none() {
            return Ok(());
        }
        let written = self
            .store
            .append_progress(&self.lease, &pending.entries, pending.metrics.as_ref())
            .await;
        if written.is_err() {
            *self.lock() = pending;
        }
        written
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}
