//! Worker processes (`dn worker`) on one embedded store, killed or stopped mid-job: the job is picked up by
//! another worker from its latest committed checkpoint and completes once, with each step once in its
//! metrics. Real training on the test model, short leases.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::Env;
use dn_store::{JobStore, SqlStore};
use dn_types::{JobStatus, TrainingJob};

const STEPS: u64 = 8;

fn examples(path: &str) -> String {
    format!("{}/../../examples/{path}", env!("CARGO_MANIFEST_DIR"))
}

struct Fixture {
    env: Env,
    store: SqlStore,
    job_id: String,
}

async fn fixture() -> Option<Fixture> {
    let model = common::test_model()?;
    let env = common::start_with(Some(model.clone()), false).await;
    let member = env.member("acme").await;
    let conn: Vec<(&str, &str)> = member.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.ok(
        &[
            "capability",
            "push",
            &examples("capabilities/support-agent"),
        ],
        &conn,
    )
    .await;
    env.ok(
        &["dataset", "push", &examples("datasets/support-demos")],
        &conn,
    )
    .await;
    let steps = STEPS.to_string();
    let out = env
        .ok(
            &[
                "train",
                "sft",
                "--model",
                &model,
                "--capability",
                "support-agent@1.0.0",
                "--dataset",
                "support-demos@0.1.0",
                "--steps",
                &steps,
                "--batch-size",
                "2",
                "--checkpoint-interval",
                "3",
                "--max-sequence-length",
                "96",
                "--lora-rank",
                "4",
                "--json",
            ],
            &conn,
        )
        .await;
    let job: serde_json::Value = serde_json::from_str(&out).unwrap();
    let store = SqlStore::open_data_dir(std::path::Path::new(&env.data_dir()))
        .await
        .unwrap();
    Some(Fixture {
        job_id: job["id"].as_str().unwrap().to_owned(),
        env,
        store,
    })
}

impl Fixture {
    fn worker(&self, id: &str) -> Child {
        Command::new(env!("CARGO_BIN_EXE_dn"))
            .args([
                "worker",
                "--data-dir",
                &self.env.data_dir(),
                "--worker-id",
                id,
                "--device",
                "cpu",
                "--lease-seconds",
                "2",
                "--heartbeat-seconds",
                "1",
                "--poll-interval-ms",
                "100",
            ])
            .env("HOME", self.env.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    }

    async fn job(&self) -> TrainingJob {
        self.store.get_job_by_id(&self.job_id).await.unwrap()
    }

    /// The `data` of the job's log entries, oldest first.
    async fn events(&self) -> Vec<serde_json::Map<String, serde_json::Value>> {
        self.store
            .list_logs("acme", "main", &self.job_id, 0)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.entry.data)
            .collect()
    }

    /// Waits (at most 180 s) until `done` holds for the job and its log.
    async fn wait_for(
        &self,
        what: &str,
        done: impl Fn(&TrainingJob, &[serde_json::Map<String, serde_json::Value>]) -> bool,
    ) {
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let (job, events) = (self.job().await, self.events().await);
            if done(&job, &events) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: job {:?}, error {:?}",
                job.status,
                job.error
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The completed job's step series is 1..=STEPS, each once, and the next attempt resumed from a
    /// checkpoint at or after `min_step`.
    async fn assert_completed_once_resumed_from(&self, min_step: u64) {
        let job = self.job().await;
        assert_eq!(job.status, JobStatus::Completed, "{:?}", job.error);
        let steps: Vec<u64> = serde_json::from_value(job.metrics["steps"].clone()).unwrap();
        assert_eq!(steps, (1..=STEPS).collect::<Vec<_>>());
        let events = self.events().await;
        let resumed: Vec<u64> = events
            .iter()
            .filter(|d| d.get("event").and_then(|e| e.as_str()) == Some("resumed"))
            .map(|d| d["step"].as_u64().unwrap())
            .collect();
        assert_eq!(resumed.len(), 1, "one resumed attempt");
        assert!(resumed[0] >= min_step, "resumed at step {}", resumed[0]);
        let ends = events
            .iter()
            .filter(|d| d.get("event").and_then(|e| e.as_str()) == Some("training_end"))
            .count();
        assert_eq!(ends, 1, "the job completed once");
        let names = checkpoint_names(&job);
        assert!(
            names.contains(&"step-000003") && names.last() == Some(&"final"),
            "{names:?}"
        );
    }
}

/// The names of the checkpoints a job's artifacts list, in order.
fn checkpoint_names(job: &TrainingJob) -> Vec<&str> {
    job.artifacts["checkpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect()
}

fn steps_done(events: &[serde_json::Map<String, serde_json::Value>]) -> u64 {
    events
        .iter()
        .filter(|d| d.get("event").and_then(|e| e.as_str()) == Some("step_complete"))
        .filter_map(|d| d.get("step").and_then(|s| s.as_u64()))
        .max()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_s_job_resumes_from_its_last_checkpoint_on_another_worker() {
    let Some(f) = fixture().await else {
        return;
    };
    let mut first = f.worker("w1");
    // Past the step-3 checkpoint, before the end.
    f.wait_for("step 4", |_, events| steps_done(events) >= 4)
        .await;
    first.kill().unwrap(); // SIGKILL: no chance to clean up
    first.wait().unwrap();
    let mut second = f.worker("w2");
    f.wait_for("completion", |job, _| job.status.is_terminal())
        .await;
    second.kill().unwrap();
    second.wait().unwrap();
    f.assert_completed_once_resumed_from(3).await;
    assert_eq!(f.job().await.attempt, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_checkpoints_and_releases_the_job_without_spending_an_attempt() {
    let Some(f) = fixture().await else {
        return;
    };
    let mut first = f.worker("w1");
    f.wait_for("step 1", |_, events| steps_done(events) >= 1)
        .await;
    let status = Command::new("kill")
        .args(["-TERM", &first.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(60);
    let exit = loop {
        if let Some(exit) = first.try_wait().unwrap() {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "the worker exits within its grace period"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(exit.success(), "{exit:?}");
    let job = f.job().await;
    assert_eq!(job.status, JobStatus::Queued, "released to the queue");
    assert_eq!(job.attempt, 1);
    let preempted_at = steps_done(&f.events().await);
    assert!(preempted_at < STEPS, "stopped before the end");
    let mut second = f.worker("w2");
    f.wait_for("completion", |job, _| job.status.is_terminal())
        .await;
    second.kill().unwrap();
    second.wait().unwrap();
    // The checkpoint written at the preemption step is where the next attempt starts.
    f.assert_completed_once_resumed_from(preempted_at).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_running_job_stops_within_a_step_and_keeps_its_checkpoints() {
    let Some(f) = fixture().await else {
        return;
    };
    let mut worker = f.worker("w1");
    f.wait_for("step 4", |_, events| steps_done(events) >= 4)
        .await;
    let asked = Instant::now();
    f.store.cancel_job("acme", "main", &f.job_id).await.unwrap();
    f.wait_for("the cancel", |job, _| job.status.is_terminal())
        .await;
    let took = asked.elapsed();
    worker.kill().unwrap();
    worker.wait().unwrap();
    let job = f.job().await;
    assert_eq!(job.status, JobStatus::Cancelled);
    let longest_step = f
        .events()
        .await
        .iter()
        .filter_map(|d| d.get("train/step_seconds").and_then(|s| s.as_f64()))
        .fold(0.0, f64::max);
    eprintln!("cancelled {took:?} after the request (longest step {longest_step:.2} s)");
    assert!(took.as_secs_f64() < longest_step + 5.0, "{took:?}");
    let names = checkpoint_names(&job);
    assert!(names.contains(&"step-000003"), "{names:?}");
    let marker = std::path::Path::new(&f.env.data_dir()).join(format!(
        "storage/jobs/acme/{}/checkpoints/step-000003/_COMMITTED",
        f.job_id
    ));
    assert!(marker.is_file(), "the checkpoint stays in storage");
}
