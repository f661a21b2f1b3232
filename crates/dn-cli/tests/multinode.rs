//! Scale-out on real servers: a `dn serve` process (API only) and `dn worker` processes, each with its own
//! working directory as if on its own node, sharing a PostgreSQL queue and an S3 bucket (moto) on
//! loopback, both started by scripts/test.sh. Jobs spread over the workers; a worker killed mid-job leaves
//! its checkpoint in S3 and another node resumes from it; the adapter downloads through the API.
//! Without `DN_TEST_DATABASE_URL` / `DN_TEST_S3_ENDPOINT` the test is skipped, unless the test script
//! requires them.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::cluster::{FAST_LEASES, JobSpec, count, free_port, kill, steps_done};
use common::examples;
use dn_registry::{Registry, StorageConfig};
use dn_store::SqlStore;
use dn_store::prelude::*;
use dn_types::{JobStatus, TrainingJob};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(240);

/// The deployment: settings every process shares, the server, and the workers by name.
struct Deployment {
    dir: tempfile::TempDir,
    model: String,
    shared: Vec<(&'static str, String)>,
    bucket: String,
    endpoint: String,
    store: SqlStore,
    server: Child,
    url: String,
    connection: Vec<(&'static str, String)>,
    workers: Vec<(String, Child)>,
}

impl Drop for Deployment {
    fn drop(&mut self) {
        let _ = self.server.kill();
        for (_, worker) in &mut self.workers {
            let _ = worker.kill();
            let _ = worker.wait();
        }
        let _ = self.server.wait();
    }
}

impl Deployment {
    async fn start() -> Option<Deployment> {
        let model = common::test_model()?;
        let admin_url = dn_testkit::postgres_url()?;
        let dn_testkit::S3Server { endpoint, bucket } = dn_testkit::s3_server()?;
        let name = format!("dn_nodes_{}", uuid_like());
        let database_url = SqlStore::create_postgres_database(&admin_url, &name)
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let aws = |var: &str| std::env::var(var).unwrap_or_else(|_| "dn-test".into());
        let shared = vec![
            ("DN_DATABASE_URL", database_url.clone()),
            ("DN_S3_BUCKET", bucket.clone()),
            ("DN_S3_ENDPOINT", endpoint.clone()),
            ("DN_S3_REGION", "us-east-1".to_owned()),
            ("DN_S3_ALLOW_HTTP", "true".to_owned()),
            ("AWS_ACCESS_KEY_ID", aws("AWS_ACCESS_KEY_ID")),
            ("AWS_SECRET_ACCESS_KEY", aws("AWS_SECRET_ACCESS_KEY")),
        ];
        let port = free_port();
        let url = format!("http://127.0.0.1:{port}");
        let server_dir = dir.path().join("server");
        let server = spawn(
            dir.path(),
            &shared,
            &server_dir,
            &[
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--workers",
                "0",
                "--model",
                &model,
            ],
        );
        let mut deployment = Deployment {
            store: SqlStore::connect(&database_url).await.unwrap(),
            dir,
            model,
            shared,
            bucket,
            endpoint,
            server,
            url,
            connection: vec![],
            workers: vec![],
        };
        deployment.wait_until_serving().await;
        let key = deployment
            .dn(&["keys", "create", "--org", "acme"], &[])
            .await;
        deployment.connection = vec![
            ("DN_SERVER", deployment.url.clone()),
            ("DN_API_KEY", key.trim().to_owned()),
            ("DN_ORGANIZATION", "acme".to_owned()),
            ("DN_WORKSPACE", "main".to_owned()),
        ];
        for (kind, path) in [
            ("capability", "capabilities/support-agent"),
            ("dataset", "datasets/support-demos"),
        ] {
            deployment.client(&[kind, "push", &examples(path)]).await;
        }
        Some(deployment)
    }

    async fn wait_until_serving(&mut self) {
        let client = dn_client::Client::new(&self.url, None).unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while client.health().await.is_err() {
            if let Some(status) = self.server.try_wait().unwrap() {
                panic!("dn serve exited with {status}: {}", self.log_tail("server"));
            }
            assert!(Instant::now() < deadline, "dn serve did not come up");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Starts `dn worker` as node `name`: its own working directory, 2 s leases, polling every second
    /// (wake-ups do the rest).
    fn add_worker(&mut self, name: &str) {
        let node_dir = self.dir.path().join(name);
        let worker = spawn(
            self.dir.path(),
            &self.shared,
            &node_dir,
            &[&["worker", "--worker-id", name], FAST_LEASES].concat(),
        );
        self.workers.push((name.to_owned(), worker));
    }

    fn kill_worker(&mut self, name: &str) {
        let index = self.workers.iter().position(|(n, _)| n == name).unwrap();
        kill(self.workers.remove(index).1);
    }

    fn log_tail(&self, node: &str) -> String {
        let text =
            std::fs::read_to_string(self.dir.path().join(node).join("dn.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// `dn ARGS` with the shared settings (for commands that talk to the store).
    async fn dn(&self, args: &[&str], extra: &[(&str, &str)]) -> String {
        let mut command = common::dn_command(self.dir.path(), args);
        for (k, v) in &self.shared {
            command.env(k, v);
        }
        for (k, v) in extra {
            command.env(k, v);
        }
        let out = tokio::time::timeout(Duration::from_secs(120), command.output())
            .await
            .expect("dn finished within 120 s")
            .unwrap();
        common::succeeded(args, out)
    }

    /// `dn ARGS` as a client of the server (API key of `acme`).
    async fn client(&self, args: &[&str]) -> String {
        let conn: Vec<(&str, &str)> = self
            .connection
            .iter()
            .map(|(k, v)| (*k, v.as_str()))
            .collect();
        self.dn(args, &conn).await
    }

    async fn submit(&self, steps: u64) -> String {
        let spec = JobSpec {
            steps,
            checkpoint_interval: 3,
            eval: false,
            max_sequence_length: 96,
        };
        let args = spec.args(&self.model);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let job: Value = serde_json::from_str(&self.client(&args).await).unwrap();
        job["id"].as_str().unwrap().to_owned()
    }

    async fn job(&self, id: &str) -> TrainingJob {
        self.store.get_job_by_id(id).await.unwrap()
    }

    async fn events(&self, id: &str) -> Vec<serde_json::Map<String, Value>> {
        let logs = self.store.list_logs("acme", "main", id, 0).await.unwrap();
        logs.into_iter().map(|e| e.entry.data).collect()
    }

    /// The worker of each attempt that claimed the job, in order.
    async fn claimed_by(&self, id: &str) -> Vec<String> {
        let logs = self.store.list_logs("acme", "main", id, 0).await.unwrap();
        logs.into_iter()
            .filter(|e| e.entry.message.starts_with("claimed by worker"))
            .filter_map(|e| e.entry.data["worker_id"].as_str().map(str::to_owned))
            .collect()
    }

    async fn wait_until(&self, what: &str, done: impl AsyncFn() -> bool) {
        let deadline = Instant::now() + LIMIT;
        while !done().await {
            let logs: Vec<String> = self
                .workers
                .iter()
                .map(|(name, _)| format!("--- {name}\n{}", self.log_tail(name)))
                .collect();
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}\n{}",
                logs.join("\n")
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A unique suffix for names (the database), without another dependency.
fn uuid_like() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{}_{nanos}", std::process::id())
}

/// Runs `dn ARGS` in `node_dir` (its data dir, as a separate machine would have), logging to `dn.log`.
fn spawn(home: &Path, shared: &[(&str, String)], node_dir: &Path, args: &[&str]) -> Child {
    std::fs::create_dir_all(node_dir).unwrap();
    let log = std::fs::File::create(node_dir.join("dn.log")).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_dn"));
    command
        .args(args)
        .arg("--data-dir")
        .arg(node_dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("DN_LOG", "info")
        .current_dir(node_dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    for (k, v) in shared {
        command.env(k, v);
    }
    command.spawn().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_on_separate_nodes_share_the_postgres_queue_and_s3_checkpoints() {
    let Some(mut d) = Deployment::start().await else {
        return;
    };
    d.add_worker("node-a");
    d.add_worker("node-b");

    // 1. Jobs spread over the nodes.
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(d.submit(2).await);
    }
    d.wait_until("the four short jobs", async || {
        let mut all = true;
        for id in &ids {
            all &= d.job(id).await.status.is_terminal();
        }
        all
    })
    .await;
    let mut nodes = BTreeSet::new();
    for id in &ids {
        let job = d.job(id).await;
        assert_eq!(job.status, JobStatus::Completed, "{id}: {:?}", job.error);
        nodes.extend(d.claimed_by(id).await);
    }
    println!("4 jobs ran on {nodes:?}");
    assert_eq!(nodes.len(), 2, "both nodes took jobs: {nodes:?}");

    // 2. The node running a job dies after checkpoint 3 reached S3; the other node resumes from it.
    let id = d.submit(8).await;
    d.wait_until("step 4 of the long job", async || {
        steps_done(&d.events(&id).await) >= 4
    })
    .await;
    let first = d.claimed_by(&id).await.pop().unwrap();
    d.kill_worker(&first);
    d.wait_until("the long job to end", async || {
        d.job(&id).await.status.is_terminal()
    })
    .await;
    let job = d.job(&id).await;
    assert_eq!(job.status, JobStatus::Completed, "{:?}", job.error);
    let claimed = d.claimed_by(&id).await;
    assert_eq!(claimed.len(), 2, "{claimed:?}");
    assert_ne!(claimed[1], first, "another node finished the job");
    let events = d.events(&id).await;
    let resumed: Vec<&serde_json::Map<String, Value>> = events
        .iter()
        .filter(|e| e.get("event").and_then(Value::as_str) == Some("resumed"))
        .collect();
    assert_eq!(resumed.len(), 1, "{resumed:?}");
    assert!(resumed[0]["step"].as_u64().unwrap() >= 3, "{resumed:?}");
    assert_eq!(count(&events, "training_end"), 1);
    let steps: Vec<u64> = serde_json::from_value(job.metrics["steps"].clone()).unwrap();
    assert_eq!(steps, (1..=8).collect::<Vec<_>>());
    let adapter = job.artifacts["adapter"].as_str().unwrap();
    let prefix = format!("s3://{}/jobs/acme/{id}/checkpoints/final", d.bucket);
    assert_eq!(adapter, prefix);
    println!(
        "job {id}: node {first} killed after step 4, {} resumed from step {} and completed",
        claimed[1], resumed[0]["step"]
    );

    // 3. The adapter downloads through the API, identical to what S3 holds.
    let download = d.dir.path().join("download");
    let out = d
        .client(&[
            "train",
            "artifacts",
            &id,
            "--download",
            download.to_str().unwrap(),
        ])
        .await;
    let downloaded: Vec<PathBuf> = out.lines().map(PathBuf::from).collect();
    for file in ["adapter_model.safetensors", "adapter_config.json"] {
        assert!(downloaded.contains(&download.join(file)), "{out}");
    }
    let registry = Registry::new(
        &StorageConfig::S3 {
            bucket: d.bucket.clone(),
            endpoint: Some(d.endpoint.clone()),
            region: Some("us-east-1".into()),
            allow_http: true,
            credentials: None,
            retry_timeout: dn_registry::DEFAULT_S3_RETRY_TIMEOUT,
        },
        1 << 20,
    )
    .unwrap();
    let direct = d.dir.path().join("direct");
    registry
        .get_checkpoint("acme", &id, "final", &direct)
        .await
        .unwrap();
    for file in &downloaded {
        let name = file.file_name().unwrap();
        assert!(
            std::fs::read(file).unwrap() == std::fs::read(direct.join(name)).unwrap(),
            "{name:?} differs from the object in S3"
        );
    }
    let config: Value =
        serde_json::from_slice(&std::fs::read(download.join("adapter_config.json")).unwrap())
            .unwrap();
    assert_eq!(config["peft_type"], "LORA");
    assert_eq!(config["r"], 4);
}
