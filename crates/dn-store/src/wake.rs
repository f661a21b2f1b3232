//! Wake-ups for idle workers: a counter that moves whenever a job may have become claimable.
//!
//! Every [`SqlStore`] handle bumps it when it queues a job itself (create, retry, release, requeue), so
//! the in-process worker of `dn serve` on SQLite starts a new job at once. On PostgreSQL those writes also
//! send `NOTIFY dn_job_queued`, and a listener task (started by the first [`SqlStore::queue_signal`]) bumps
//! the counter for jobs queued by other processes, on other nodes. Whatever is lost (a dropped listener
//! connection, a retry whose backoff ends) is picked up by the workers' polling, which stays on.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use sqlx::Executor;
use sqlx::postgres::PgListener;
use tokio::sync::{oneshot, watch};
use tracing::{debug, warn};

use crate::sql::{Dialect, SqlStore};

/// The PostgreSQL channel the store notifies when it queues a job.
pub const QUEUE_CHANNEL: &str = "dn_job_queued";

/// How long the listener waits before connecting again after an error.
const RECONNECT_DELAY: Duration = Duration::from_secs(5);

pub(crate) struct WakeUps {
    sender: watch::Sender<u64>,
    /// PostgreSQL only, until the listener starts: where it connects, and what tells it to stop (this
    /// struct's drop, when the last handle of the store goes).
    listener: Mutex<Option<(String, oneshot::Receiver<()>)>>,
    _stop: oneshot::Sender<()>,
}

impl std::fmt::Debug for WakeUps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password.
        f.debug_struct("WakeUps")
            .field("generation", &*self.sender.borrow())
            .finish_non_exhaustive()
    }
}

impl WakeUps {
    pub(crate) fn new(dialect: Dialect, url: &str) -> Arc<WakeUps> {
        let (stop, stopped) = oneshot::channel();
        Arc::new(WakeUps {
            sender: watch::channel(0).0,
            listener: Mutex::new((dialect == Dialect::Postgres).then(|| (url.to_owned(), stopped))),
            _stop: stop,
        })
    }

    fn bump(&self) {
        self.sender.send_modify(|generation| *generation += 1);
    }
}

impl SqlStore {
    /// A receiver that changes when a job may have become claimable (see the module docs). On PostgreSQL
    /// the first call starts the listener, so call it before the first claim and keep it.
    pub(crate) fn subscribe_queue(&self) -> watch::Receiver<u64> {
        let listener = self.wake.listener.lock().expect("not poisoned").take();
        if let Some((url, stopped)) = listener {
            tokio::spawn(listen(url, Arc::downgrade(&self.wake), stopped));
        }
        self.wake.sender.subscribe()
    }

    /// Tells idle workers (here, and on PostgreSQL everywhere) that a job was queued. Best effort: a
    /// failed notification only delays the job until the next poll.
    pub(crate) async fn job_queued(&self) {
        self.wake.bump();
        if self.dialect == Dialect::Postgres {
            let sql = format!("NOTIFY {QUEUE_CHANNEL}");
            if let Err(e) = self.pool.execute(sql.as_str()).await {
                debug!(error = %e, "NOTIFY {QUEUE_CHANNEL} failed; workers will find the job by polling");
            }
        }
    }
}

/// Listens on [`QUEUE_CHANNEL`] until the store is dropped.
async fn listen(url: String, wake: Weak<WakeUps>, mut stopped: oneshot::Receiver<()>) {
    loop {
        tokio::select! {
            _ = &mut stopped => return,
            () = listen_until_error(&url, &wake) => {}
        }
    }
}

/// Bumps the counter for each notification, once after connecting and once after each reconnection
/// (notifications sent while disconnected are lost, so workers look once). Returns after an error.
async fn listen_until_error(url: &str, wake: &Weak<WakeUps>) {
    let mut listener = match connect(url).await {
        Ok(listener) => listener,
        Err(e) => {
            warn!(error = %e, "cannot listen for queued jobs; polling only, retrying in 5 s");
            tokio::time::sleep(RECONNECT_DELAY).await;
            return;
        }
    };
    bump(wake);
    loop {
        match listener.try_recv().await {
            // A notification, or a lost connection that the next call re-establishes.
            Ok(_) => bump(wake),
            Err(e) => {
                warn!(error = %e, "listening for queued jobs failed; reconnecting in 5 s");
                bump(wake);
                tokio::time::sleep(RECONNECT_DELAY).await;
                return;
            }
        }
    }
}

async fn connect(url: &str) -> sqlx::Result<PgListener> {
    let mut listener = PgListener::connect(url).await?;
    listener.listen(QUEUE_CHANNEL).await?;
    Ok(listener)
}

fn bump(wake: &Weak<WakeUps>) {
    if let Some(wake) = wake.upgrade() {
        wake.bump();
    }
}
