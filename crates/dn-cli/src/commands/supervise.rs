//! `dn serve`'s workers as child processes of the same binary (`dn worker --supervised`), so that a worker
//! killed for memory, crashed or aborted leaves the API answering. Each slot restarts its process after a
//! backoff, and the jobs the dead process held go back to the queue at once (a retry spent, how it died in
//! their logs) instead of waiting for their leases to run out.
//!
//! A child runs in its own process group (a Ctrl-C at the terminal reaches the server only), learns that
//! the API queued a job from a byte on its stdin, and shuts down gracefully when its stdin closes: when the
//! server shuts down, or dies.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dn_store::prelude::*;
use dn_worker::{describe_exit, job_queued};
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

/// The first restart waits this long; each quick death doubles it.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// A process that ran this long was healthy: its next restart waits `FIRST_BACKOFF` again.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// What every worker process is started with.
#[derive(Debug, Clone)]
pub struct WorkerProcesses {
    pub exe: PathBuf,
    /// Arguments after `worker --supervised` (logging).
    pub args: Vec<String>,
    /// `DN_*` settings the server was given (the child reads them as `dn worker` would).
    pub env: Vec<(&'static str, String)>,
    /// Worker ids are `{base_id}-{slot}`.
    pub base_id: String,
    pub max_retries: u32,
    /// How long a child gets to checkpoint and release its job after its stdin closes.
    pub shutdown_grace: Duration,
}

/// Starts `count` supervised worker processes; the handles end once `shutdown` turns true and the
/// children have exited.
pub fn supervise(
    store: Arc<dyn JobStore>,
    plan: WorkerProcesses,
    count: usize,
    shutdown: watch::Receiver<bool>,
) -> Vec<JoinHandle<()>> {
    let plan = Arc::new(plan);
    (0..count)
        .map(|slot| {
            let worker_id = format!("{}-{slot}", plan.base_id);
            tokio::spawn(run_slot(
                store.clone(),
                plan.clone(),
                worker_id,
                shutdown.clone(),
            ))
        })
        .collect()
}

fn start(plan: &WorkerProcesses, worker_id: &str) -> std::io::Result<Child> {
    Command::new(&plan.exe)
        .arg("worker")
        .arg("--supervised")
        .args(&plan.args)
        .envs(plan.env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("DN_WORKER_ID", worker_id)
        .stdin(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
}

async fn run_slot(
    store: Arc<dyn JobStore>,
    plan: Arc<WorkerProcesses>,
    worker_id: String,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = FIRST_BACKOFF;
    let mut queued = store.queue_signal();
    while !*shutdown.borrow() {
        let started = Instant::now();
        let ended = match start(&plan, &worker_id) {
            Ok(child) => {
                info!(worker = %worker_id, pid = child.id(), "worker process started");
                match watch_child(child, &plan, &mut queued, &mut shutdown).await {
                    Some(ended) => ended,
                    None => return,
                }
            }
            Err(e) => format!("could not be started: {e}"),
        };
        let cause = format!("worker process {worker_id} {ended}");
        match store
            .requeue_lost_worker(&worker_id, &cause, plan.max_retries)
            .await
        {
            Ok(reaped) => {
                for id in reaped.requeued.iter().chain(&reaped.failed) {
                    warn!(job = %id, "{cause}: its job was given back to the queue or failed");
                }
            }
            // Its leases run out and any worker's reaper requeues them.
            Err(e) => warn!(worker = %worker_id, error = %e, "could not requeue its jobs"),
        }
        if started.elapsed() >= HEALTHY_RUN {
            backoff = FIRST_BACKOFF;
        }
        warn!(worker = %worker_id, "{cause}; starting it again in {backoff:?}");
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.changed() => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Forwards queue signals to the child until it exits (`Some(how)`) or shutdown begins: then its stdin
/// is closed, it gets its grace period to release its job, and is killed after that (`None`).
async fn watch_child(
    mut child: Child,
    plan: &WorkerProcesses,
    queued: &mut Option<watch::Receiver<u64>>,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<String> {
    let mut stdin = child.stdin.take();
    loop {
        tokio::select! {
            status = child.wait() => {
                return Some(match status {
                    Ok(status) => describe_exit(status),
                    Err(e) => format!("could not be waited for: {e}"),
                });
            }
            () = job_queued(queued) => {
                if let Some(pipe) = stdin.as_mut() {
                    // A child that stopped reading must not stall its supervisor.
                    let write = tokio::time::timeout(Duration::from_secs(1), pipe.write_all(b"\n"));
                    if !matches!(write.await, Ok(Ok(()))) {
                        stdin = None;
                    }
                }
            }
            _ = shutdown.changed() => {
                drop(stdin.take());
                let grace = plan.shutdown_grace + Duration::from_secs(10);
                if tokio::time::timeout(grace, child.wait()).await.is_err() {
                    warn!(pid = child.id(), "worker process still running after its grace period: killed");
                    let _ = child.kill().await;
                }
                return None;
            }
        }
    }
}
