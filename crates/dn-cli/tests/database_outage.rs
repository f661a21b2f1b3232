//! PostgreSQL stopped and started under a running deployment (its own throwaway cluster, `dn serve` and a
//! `dn worker` process on the test model, 15 s leases, no retry allowed): an outage shorter than the lease
//! costs the job nothing (same attempt, each step once); a longer one ends the attempt at the lease's
//! deadline and the job resumes from its checkpoint without spending a retry. Meanwhile the API answers
//! liveness, says it is not ready, and answers 503 with Retry-After at once.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::cluster::{JobSpec, Server, free_port};
use common::{examples, test_model};
use dn_store::SqlStore;
use dn_store::prelude::*;
use dn_types::{JobStatus, TrainingJob};

/// A PostgreSQL cluster of this test alone (scripts/lib/postgres.sh), removed when dropped.
struct Postgres {
    dir: PathBuf,
    url: String,
}

fn postgres_script(function: &str, dir: &Path) -> std::process::Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/lib/postgres.sh");
    Command::new("bash")
        .arg("-c")
        .arg(r#"source "$1" && PG_DIR="$3" "$2" "$3" && echo "${DN_TEST_DATABASE_URL:-}""#)
        .arg("postgres.sh")
        .arg(script)
        .arg(function)
        .arg(dir)
        .output()
        .unwrap()
}

impl Postgres {
    /// `None` (skipped) where PostgreSQL 15 is not installed, unless `DN_REQUIRE_POSTGRES=1`.
    fn start(dir: PathBuf) -> Option<Postgres> {
        let installed = Path::new("/usr/lib/postgresql/15/bin/initdb").exists();
        let what = "PostgreSQL 15 is not installed (scripts/test.sh installs it)";
        if !dn_testkit::available(installed, what, "DN_REQUIRE_POSTGRES") {
            return None;
        }
        let out = postgres_script("pg_start", &dir);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let url = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        Some(Postgres { dir, url })
    }

    fn halt(&self) {
        assert!(postgres_script("pg_halt", &self.dir).status.success());
    }

    fn resume(&self) {
        assert!(postgres_script("pg_resume", &self.dir).status.success());
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        postgres_script("pg_stop", &self.dir);
    }
}

/// A child process killed (and reaped) when dropped.
struct Worker(Child);

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Deployment {
    _pg: Postgres,
    store: SqlStore,
    dir: tempfile::TempDir,
    url: String,
    key: String,
    model: String,
    _server: Server,
    _worker: Worker,
}

impl Deployment {
    fn dn(&self, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_dn"))
            .args(args)
            .env("HOME", self.dir.path())
            .env("DN_CONFIG_DIR", self.dir.path().join("config"))
            .env("DN_SERVER", &self.url)
            .env("DN_API_KEY", &self.key)
            .env("DN_ORGANIZATION", "acme")
            .env("DN_WORKSPACE", "main")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn submit(&self, steps: u32) -> String {
        let job = JobSpec {
            steps: steps.into(),
            checkpoint_interval: 4,
            eval: false,
            max_sequence_length: 64,
        };
        let args = job.args(&self.model);
        let out = self.dn(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let job: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        job["id"].as_str().unwrap().to_owned()
    }

    async fn job(&self, id: &str) -> TrainingJob {
        self.store.get_job_by_id(id).await.unwrap()
    }

    async fn wait_for(&self, id: &str, what: &str, done: impl Fn(&TrainingJob) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(240);
        loop {
            if let Ok(job) = self.store.get_job_by_id(id).await
                && done(&job)
            {
                return;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn log(&self, id: &str) -> Vec<String> {
        let logs = self.store.list_logs("acme", "main", id, 0).await.unwrap();
        logs.into_iter().map(|l| l.entry.message).collect()
    }
}

fn steps(job: &TrainingJob) -> Vec<u64> {
    job.metrics
        .get("steps")
        .and_then(|s| serde_json::from_value(s.clone()).ok())
        .unwrap_or_default()
}

async fn deploy() -> Option<Deployment> {
    let model = test_model()?;
    let dir = tempfile::tempdir().unwrap();
    let pg = Postgres::start(dir.path().join("pg"))?;
    let store = SqlStore::connect(&pg.url).await.unwrap();
    let key = store.create_api_key("acme").await.unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let node = |command: &str| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_dn"));
        c.arg(command)
            .args(["--database-url", &pg.url])
            .arg("--data-dir")
            .arg(dir.path().join(format!("{command}-data")))
            .arg("--storage-dir")
            .arg(dir.path().join("storage"))
            .env("HOME", dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c
    };
    let server = Server(
        node("serve")
            .args(["--listen", &listen, "--workers", "0"])
            .spawn()
            .unwrap(),
    );
    let worker = Worker(
        node("worker")
            .args([
                "--worker-id",
                "w1",
                "--device",
                "cpu",
                "--lease-seconds",
                "15",
            ])
            .args(["--heartbeat-seconds", "1", "--poll-interval-ms", "500"])
            .args(["--max-retries", "0", "--retry-backoff-seconds", "1"])
            .spawn()
            .unwrap(),
    );
    let url = format!("http://{listen}");
    let client = dn_client::Client::new(&url, None).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.health().await.is_err() {
        assert!(Instant::now() < deadline, "dn serve did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let d = Deployment {
        _pg: pg,
        store,
        dir,
        url,
        key,
        model,
        _server: server,
        _worker: worker,
    };
    for (kind, path) in [
        ("capability", "capabilities/support-agent"),
        ("dataset", "datasets/support-demos"),
    ] {
        let out = d.dn(&[kind, "push", &examples(path)]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Some(d)
}

/// While the database is down: liveness 200, readiness 503, an authenticated call 503 with
/// Retry-After, each within a few seconds.
async fn api_while_the_database_is_down(d: &Deployment) {
    let http = reqwest::Client::new();
    let started = Instant::now();
    let live = http.get(format!("{}/health", d.url)).send().await.unwrap();
    assert_eq!(live.status(), 200);
    let ready = http
        .get(format!("{}/health/ready", d.url))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    let jobs = http
        .get(format!("{}/api/v1/org/acme/ws/main/training/jobs", d.url))
        .header("X-API-Key", &d.key)
        .send()
        .await
        .unwrap();
    assert_eq!(jobs.status(), 503);
    assert_eq!(jobs.headers()["retry-after"], "5");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_shorter_and_longer_than_the_lease_costs_no_retry() {
    let Some(d) = deploy().await else {
        return;
    };
    // Shorter than the lease: the attempt trains through it.
    let first = d.submit(24);
    d.wait_for(&first, "step 3", |j| steps(j).len() >= 3).await;
    let halted = Instant::now();
    d._pg.halt();
    api_while_the_database_is_down(&d).await;
    tokio::time::sleep(Duration::from_secs(8).saturating_sub(halted.elapsed())).await;
    d._pg.resume();
    d.wait_for(&first, "the first job to end", |j| j.status.is_terminal())
        .await;
    let job = d.job(&first).await;
    assert_eq!(
        (job.status, job.attempt),
        (JobStatus::Completed, 1),
        "{:?}",
        job.error
    );
    assert_eq!(steps(&job), (1..=24).collect::<Vec<_>>(), "each step once");

    // Longer than the lease: the attempt ends at its deadline, the job goes back to the queue without
    // spending a retry (none is allowed) and resumes from its last checkpoint.
    let second = d.submit(40);
    d.wait_for(&second, "a checkpoint", |j| steps(j).len() >= 6)
        .await;
    d._pg.halt();
    tokio::time::sleep(Duration::from_secs(22)).await;
    d._pg.resume();
    d.wait_for(&second, "the second job to end", |j| j.status.is_terminal())
        .await;
    let job = d.job(&second).await;
    assert_eq!(job.status, JobStatus::Completed, "{:?}", job.error);
    assert_eq!(steps(&job), (1..=40).collect::<Vec<_>>(), "each step once");
    let log = d.log(&second).await;
    assert!(
        log.iter().any(|m| m.contains("no retry spent")),
        "attempt {}: {log:#?}",
        job.attempt
    );
}
