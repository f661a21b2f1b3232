//! An embedded store served in-process, with `dn worker` processes on it (as if on separate nodes): jobs
//! on the real test model, short leases, helpers to watch a job's status and log events.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dn_store::SqlStore;
use dn_store::prelude::*;
use dn_types::TrainingJob;
use serde_json::{Map, Value};

use super::{Env, examples};

/// Worker flags of the tests: CPU, 2 s leases renewed every second, a poll every second, and room for
/// the lost workers of the kill tests (each spends a retry).
pub const FAST_LEASES: &[&str] = &[
    "--device",
    "cpu",
    "--lease-seconds",
    "2",
    "--heartbeat-seconds",
    "1",
    "--poll-interval-ms",
    "1000",
    "--max-retries",
    "20",
];

pub type Events = Vec<Map<String, Value>>;

pub struct Cluster {
    pub env: Env,
    pub store: SqlStore,
    pub model: String,
    conn: Vec<(&'static str, String)>,
}

/// A job of `steps` steps, batch 2, short sequences, rank 4.
pub struct JobSpec {
    pub steps: u64,
    pub checkpoint_interval: u64,
    pub eval: bool,
    pub max_sequence_length: u32,
}

impl JobSpec {
    /// `dn train sft ... --json` for this job on `model`, with the quickstart's capability and data.
    pub fn args(&self, model: &str) -> Vec<String> {
        let mut args: Vec<String> = [
            "train",
            "sft",
            "--model",
            model,
            "--capability",
            "support-agent@1.0.0",
            "--dataset",
            "support-demos@0.1.0",
            "--batch-size",
            "2",
            "--lora-rank",
            "4",
            "--json",
        ]
        .map(str::to_owned)
        .into();
        for (flag, value) in [
            ("--steps", self.steps),
            ("--checkpoint-interval", self.checkpoint_interval),
            ("--max-sequence-length", u64::from(self.max_sequence_length)),
        ] {
            args.extend([flag.to_owned(), value.to_string()]);
        }
        if self.eval {
            args.extend(["--eval-dataset".to_owned(), "support-eval@0.1.0".to_owned()]);
            args.extend(["--eval-samples".to_owned(), "0".to_owned()]);
        }
        args
    }
}

impl Cluster {
    /// `None` when the test model is missing (the test is skipped).
    pub async fn start() -> Option<Cluster> {
        let model = super::test_model()?;
        let env = super::start_with(Some(model.clone()), false).await;
        let conn = env.member("acme").await;
        let cluster = Cluster {
            store: SqlStore::open_data_dir(std::path::Path::new(&env.data_dir()))
                .await
                .unwrap(),
            env,
            model,
            conn,
        };
        for (kind, path) in [
            ("capability", "capabilities/support-agent"),
            ("dataset", "datasets/support-demos"),
            ("dataset", "datasets/support-eval"),
        ] {
            cluster.dn_ok(&[kind, "push", &examples(path)]).await;
        }
        Some(cluster)
    }

    pub async fn dn_ok(&self, args: &[&str]) -> String {
        let conn: Vec<(&str, &str)> = self.conn.iter().map(|(k, v)| (*k, v.as_str())).collect();
        self.env.ok(args, &conn).await
    }

    pub async fn submit(&self, spec: &JobSpec) -> String {
        let args = spec.args(&self.model);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = self.dn_ok(&args).await;
        let job: Value = serde_json::from_str(&out).unwrap();
        job["id"].as_str().unwrap().to_owned()
    }

    /// A `dn worker` process with its own id: 2 s leases, 1 s heartbeats, CPU.
    pub fn worker(&self, id: &str) -> Child {
        Command::new(env!("CARGO_BIN_EXE_dn"))
            .args([
                "worker",
                "--data-dir",
                &self.env.data_dir_arg(),
                "--worker-id",
                id,
            ])
            .args(FAST_LEASES)
            .env("HOME", self.env.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    }

    /// A `dn serve` process on this cluster's store at `listen` with `workers` worker processes (2 s
    /// leases, 1 s heartbeats), killed when dropped.
    pub fn serve(&self, listen: &str, workers: usize) -> Server {
        let child = Command::new(env!("CARGO_BIN_EXE_dn"))
            .args([
                "serve",
                "--listen",
                listen,
                "--data-dir",
                &self.env.data_dir_arg(),
            ])
            .args(["--workers", &workers.to_string()])
            .args(FAST_LEASES)
            .env("HOME", self.env.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Server(child)
    }

    pub async fn job(&self, id: &str) -> TrainingJob {
        self.store.get_job_by_id(id).await.unwrap()
    }

    /// The `data` of the job's log entries, oldest first.
    pub async fn events(&self, id: &str) -> Events {
        self.store
            .list_logs("acme", "main", id, 0)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.entry.data)
            .collect()
    }

    /// Waits (at most `limit`) until `done` holds for the job and its log.
    pub async fn wait_for(
        &self,
        id: &str,
        what: &str,
        limit: Duration,
        done: impl Fn(&TrainingJob, &Events) -> bool,
    ) {
        let deadline = Instant::now() + limit;
        loop {
            let (job, events) = (self.job(id).await, self.events(id).await);
            if done(&job, &events) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: job {:?}, error {:?}",
                job.status,
                job.error
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A server process that is killed (and reaped) when dropped: a test that fails leaves none behind.
pub struct Server(pub Child);

impl std::ops::Deref for Server {
    type Target = Child;

    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Server {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// A loopback port nothing listens on (for a server process to take).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The processes whose parent is `pid` (from /proc).
pub fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| {
            std::fs::read_to_string(format!("/proc/{child}/stat")).is_ok_and(|stat| {
                // `pid (comm) state ppid ...`: the command name may hold spaces and parentheses.
                stat.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok())
                    == Some(pid)
            })
        })
        .collect()
}

/// Sends `signal` (a `kill -s` name) to a process.
pub fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args(["-s", signal, &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -s {signal} {pid}");
}

/// Stops a worker process at once (SIGKILL: no chance to clean up).
pub fn kill(mut worker: Child) {
    let _ = worker.kill();
    let _ = worker.wait();
}

/// How many of the job's log events are `event`.
pub fn count(events: &Events, event: &str) -> usize {
    events
        .iter()
        .filter(|d| d.get("event").and_then(|e| e.as_str()) == Some(event))
        .count()
}

/// The highest step logged as complete.
pub fn steps_done(events: &Events) -> u64 {
    events
        .iter()
        .filter(|d| d.get("event").and_then(|e| e.as_str()) == Some("step_complete"))
        .filter_map(|d| d.get("step").and_then(|s| s.as_u64()))
        .max()
        .unwrap_or(0)
}

/// The names of the checkpoints a job's artifacts list, in order.
pub fn checkpoint_names(job: &TrainingJob) -> Vec<&str> {
    job.artifacts["checkpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect()
}
