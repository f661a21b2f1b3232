//! `report_to: mlflow` against a real MLflow tracking server on loopback (scripts/test.sh starts one:
//! `DN_TEST_MLFLOW_URI`): a job's run holds its params, tags, every step's metrics, the eval losses, the
//! final adapter and its status; an attempt that resumes continues the run; a tracker that is down leaves
//! the job completing, with warnings in its log.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::sft::{Setup, create_job_with, events, run_to_completion, setup, worker_with};
use dn_spec::Tracker;
use dn_store::prelude::*;
use dn_types::TrainingJob;
use dn_worker::MlflowSettings;
use serde_json::{Value, json};

fn tiny_model() -> String {
    let model = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/bnb/base");
    model.to_string_lossy().into_owned()
}

fn settings(uri: &str, experiment: &str) -> MlflowSettings {
    let vars = [
        ("MLFLOW_TRACKING_URI", uri.to_owned()),
        ("MLFLOW_EXPERIMENT_NAME", experiment.to_owned()),
        ("DN_MLFLOW_FINISH_TIMEOUT_SECONDS", "30".to_owned()),
    ];
    MlflowSettings::from_env(|name| {
        vars.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.clone())
    })
    .unwrap()
    .unwrap()
}

async fn mlflow_job(setup: &Setup, steps: u32, checkpoint_interval: u32) -> TrainingJob {
    create_job_with(setup, &tiny_model(), "demos", &[], steps, |c| {
        c.extras.report_to = vec![Tracker::Mlflow];
        c.checkpoint_interval = checkpoint_interval;
        c.extras.eval_interval = 2;
    })
    .await
}

/// A read-only view of the tracking server, through its REST API.
struct Mlflow {
    uri: String,
    http: reqwest::Client,
}

impl Mlflow {
    fn new(uri: &str) -> Mlflow {
        Mlflow {
            uri: uri.trim_end_matches('/').to_owned(),
            http: reqwest::Client::new(),
        }
    }

    async fn get(&self, path: &str, query: &[(&str, &str)]) -> Value {
        let response = self
            .http
            .get(format!("{}/api/2.0/{path}", self.uri))
            .query(query)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{path}: {response:?}");
        response.json().await.unwrap()
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        let response = self
            .http
            .post(format!("{}/api/2.0/{path}", self.uri))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{path}: {response:?}");
        response.json().await.unwrap()
    }

    /// Every run of `job` in `experiment`.
    async fn runs_of(&self, experiment: &str, job: &str) -> Vec<Value> {
        let found = self
            .get(
                "mlflow/experiments/get-by-name",
                &[("experiment_name", experiment)],
            )
            .await;
        let id = found["experiment"]["experiment_id"].as_str().unwrap();
        let filter = format!("tags.`dn.job_id` = '{job}'");
        let runs = self
            .post(
                "mlflow/runs/search",
                json!({"experiment_ids": [id], "filter": filter}),
            )
            .await;
        runs["runs"].as_array().cloned().unwrap_or_default()
    }

    /// `(step, value)` of each point of `key`, in step order.
    async fn history(&self, run: &str, key: &str) -> Vec<(i64, f64)> {
        let got = self
            .get(
                "mlflow/metrics/get-history",
                &[("run_id", run), ("metric_key", key)],
            )
            .await;
        let mut points: Vec<(i64, f64)> = got["metrics"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|m| (m["step"].as_i64().unwrap(), m["value"].as_f64().unwrap()))
            .collect();
        points.sort_by(|a, b| a.partial_cmp(b).unwrap());
        points
    }
}

fn pairs(run: &Value, kind: &str) -> std::collections::BTreeMap<String, String> {
    run["data"][kind]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|p| {
            (
                p["key"].as_str().unwrap().to_owned(),
                p["value"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// The messages of the job log's `tracker_warning` entries.
fn tracker_warnings(logs: &[dn_store::StoredLogEntry]) -> Vec<String> {
    logs.iter()
        .filter(|l| l.entry.data.get("event") == Some(&json!("tracker_warning")))
        .map(|l| l.entry.message.clone())
        .collect()
}

fn experiment_name(test: &str) -> String {
    format!("dn-test/{test}-{}", uuid::Uuid::new_v4().simple())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_s_run_holds_its_params_tags_metrics_adapter_and_status() {
    let Some(uri) = dn_testkit::mlflow_uri() else {
        return;
    };
    let setup = setup().await;
    let experiment = experiment_name("job");
    let job = mlflow_job(&setup, 4, 2).await;
    let worker = worker_with(&setup, |r| r.with_mlflow(settings(&uri, &experiment)));
    let logs = run_to_completion(&setup, worker, &job).await;
    assert!(
        events(&logs, "tracker_warning").is_empty(),
        "{:?}",
        events(&logs, "tracker_warning")
    );
    let mlflow = Mlflow::new(&uri);
    let runs = mlflow.runs_of(&experiment, &job.id).await;
    assert_eq!(runs.len(), 1);
    let run = &runs[0];
    let id = run["info"]["run_id"].as_str().unwrap();
    assert_eq!(run["info"]["status"], "FINISHED");
    assert_eq!(run["info"]["run_name"], job.id.as_str());
    // Params: the job's effective config.
    let params = pairs(run, "params");
    assert_eq!(params["learning_rate"], "0.0001");
    assert_eq!(params["lora_rank"], "8");
    assert_eq!(params["steps"], "4");
    assert_eq!(params["dataset_ref.name"], "demos");
    assert_eq!(params["model"], job.model);
    // Tags: the job, its model, datasets, capability (and its digest) and dn's version.
    let tags = pairs(run, "tags");
    assert_eq!(tags["dn.job_id"], job.id);
    assert_eq!(tags["dn.model"], job.model);
    assert_eq!(tags["dn.dataset_ref"], "demos@0.1.0");
    assert_eq!(tags["dn.eval_dataset_ref"], "demos@0.1.0");
    assert_eq!(tags["dn.capability"], "agent@1.0.0");
    assert!(tags["dn.capability_digest"].starts_with("sha256:"));
    assert_eq!(tags["dn.version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(tags["dn.attempt"], "1");
    // Every step's metrics, as the job's log reports them, and each eval loss.
    let steps: Vec<(i64, f64)> = events(&logs, "step_complete")
        .iter()
        .map(|e| {
            (
                e["step"].as_i64().unwrap(),
                e["train/loss"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(steps.len(), 4);
    let losses = mlflow.history(id, "train/loss").await;
    assert_eq!(losses.len(), 4);
    for ((step, loss), (logged_step, logged)) in losses.iter().zip(&steps) {
        assert_eq!(step, logged_step);
        assert!(
            (loss - logged).abs() <= 1e-6 * logged.abs(),
            "{loss} vs {logged}"
        );
    }
    for key in [
        "train/learning_rate",
        "train/grad_norm",
        "train/tokens_per_second",
    ] {
        let points = mlflow.history(id, key).await;
        let at: Vec<i64> = points.iter().map(|p| p.0).collect();
        assert_eq!(at, [1, 2, 3, 4], "{key}");
    }
    let evals: Vec<(i64, f64)> = events(&logs, "eval_complete")
        .iter()
        .map(|e| {
            (
                e["step"].as_i64().unwrap(),
                e["eval/loss"].as_f64().unwrap(),
            )
        })
        .collect();
    let logged_evals = mlflow.history(id, "eval/loss").await;
    assert!(!evals.is_empty());
    assert_eq!(logged_evals.len(), evals.len());
    for (a, b) in logged_evals.iter().zip(&evals) {
        assert_eq!(a.0, b.0);
        assert!((a.1 - b.1).abs() <= 1e-6 * b.1.abs());
    }
    // The final adapter, without the optimizer state, byte for byte what storage holds.
    let listed = mlflow
        .get(
            "mlflow/artifacts/list",
            &[("run_id", id), ("path", "adapter")],
        )
        .await;
    let files: Vec<&str> = listed["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert!(
        files.contains(&"adapter/adapter_model.safetensors"),
        "{files:?}"
    );
    assert!(files.contains(&"adapter/adapter_config.json"), "{files:?}");
    assert!(!files.iter().any(|f| f.contains("optimizer")), "{files:?}");
    let root = run["info"]["artifact_uri"]
        .as_str()
        .unwrap()
        .trim_start_matches("mlflow-artifacts:/");
    let uploaded = mlflow
        .http
        .get(format!(
            "{}/api/2.0/mlflow-artifacts/artifacts/{root}/adapter/adapter_model.safetensors",
            mlflow.uri
        ))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let stored = setup
        ._dir
        .path()
        .join("storage/jobs/acme")
        .join(&job.id)
        .join("checkpoints/final/adapter_model.safetensors");
    assert_eq!(uploaded.as_ref(), std::fs::read(stored).unwrap().as_slice());
}

/// An attempt stopped by the worker's shutdown leaves its run running; the attempt that resumes the job
/// from its checkpoint continues that run to the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_job_continues_its_run() {
    let Some(uri) = dn_testkit::mlflow_uri() else {
        return;
    };
    let setup = setup().await;
    let experiment = experiment_name("resume");
    let steps = 30;
    let job = mlflow_job(&setup, steps, 3).await;
    let first = worker_with(&setup, |r| r.with_mlflow(settings(&uri, &experiment)));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let running = tokio::spawn(first.run(stopped));
    // Stopped once a checkpoint is committed.
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let logs = setup
            .store
            .list_logs("acme", "main", &job.id, 0)
            .await
            .unwrap();
        if !events(&logs, "checkpoint_saved").is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "no checkpoint");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(120), running)
        .await
        .expect("the worker stopped")
        .unwrap()
        .unwrap();
    let mlflow = Mlflow::new(&uri);
    let runs = mlflow.runs_of(&experiment, &job.id).await;
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0]["info"]["status"], "RUNNING");
    let id = runs[0]["info"]["run_id"].as_str().unwrap().to_owned();
    let before = mlflow.history(&id, "train/loss").await.len();
    assert!(before >= 3 && before < steps as usize, "{before} steps");

    let second = worker_with(&setup, |r| r.with_mlflow(settings(&uri, &experiment)));
    let logs = run_to_completion(&setup, second, &job).await;
    assert_eq!(events(&logs, "resumed").len(), 1);
    let runs = mlflow.runs_of(&experiment, &job.id).await;
    assert_eq!(runs.len(), 1, "the resumed attempt continued the run");
    assert_eq!(runs[0]["info"]["run_id"], id.as_str());
    assert_eq!(runs[0]["info"]["status"], "FINISHED");
    assert_eq!(pairs(&runs[0], "tags")["dn.attempt"], "2");
    let mut covered: Vec<i64> = mlflow
        .history(&id, "train/loss")
        .await
        .iter()
        .map(|p| p.0)
        .collect();
    covered.dedup();
    assert_eq!(covered, (1..=i64::from(steps)).collect::<Vec<_>>());
}

/// Nothing listens at the tracking URI: the job completes; its log says MLflow failed and what was lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tracker_that_is_down_leaves_the_job_completing_with_warnings() {
    let setup = setup().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let uri = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let mut down = settings(&uri, "unreachable");
    down.finish_timeout = Duration::from_secs(2);
    let job = mlflow_job(&setup, 3, 3).await;
    let worker = worker_with(&setup, |r| r.with_mlflow(down));
    let started = Instant::now();
    let logs = run_to_completion(&setup, worker, &job).await;
    let warnings = tracker_warnings(&logs);
    assert!(
        warnings
            .iter()
            .any(|w| w.contains(&uri) && w.contains("retrying")),
        "{warnings:?}"
    );
    assert!(
        warnings.iter().any(|w| w.contains("dropped")),
        "{warnings:?}"
    );
    assert_eq!(events(&logs, "step_complete").len(), 3);
    assert!(started.elapsed() < Duration::from_secs(120));
}

/// A tracking server that accepts connections and never answers: each call times out, the job completes
/// within its bounds and its log says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tracker_that_never_answers_does_not_hold_the_job() {
    let setup = setup().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let uri = format!("http://{}", listener.local_addr().unwrap());
    // Holds what it accepts, reading nothing, until the test ends (at most 64 connections).
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while held.len() < 64 {
            match listener.accept().await {
                Ok((stream, _)) => held.push(stream),
                Err(_) => break,
            }
        }
        std::future::pending::<()>().await;
    });
    let mut slow = settings(&uri, "silent");
    slow.request_timeout = Duration::from_secs(1);
    slow.finish_timeout = Duration::from_secs(3);
    let job = mlflow_job(&setup, 3, 3).await;
    let started = Instant::now();
    let logs = run_to_completion(&setup, worker_with(&setup, |r| r.with_mlflow(slow)), &job).await;
    silent.abort();
    let warnings = tracker_warnings(&logs);
    assert!(
        warnings.iter().any(|w| w.contains("retrying")),
        "{warnings:?}"
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("still not done after 3 s")),
        "{warnings:?}"
    );
    assert_eq!(events(&logs, "step_complete").len(), 3);
    assert!(started.elapsed() < Duration::from_secs(120));
}

/// A fresh attempt (no checkpoint to resume) opens a new run and closes the earlier attempt's run that
/// was left running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_attempt_closes_the_run_an_earlier_one_left_running() {
    let Some(uri) = dn_testkit::mlflow_uri() else {
        return;
    };
    let setup = setup().await;
    let experiment = experiment_name("fresh");
    let job = mlflow_job(&setup, 2, 2).await;
    let mlflow = Mlflow::new(&uri);
    let created = mlflow
        .post("mlflow/experiments/create", json!({"name": experiment}))
        .await;
    let tags = json!([{"key": "dn.job_id", "value": job.id}]);
    let earlier = mlflow
        .post(
            "mlflow/runs/create",
            json!({"experiment_id": created["experiment_id"], "start_time": 1, "tags": tags}),
        )
        .await;
    let earlier = earlier["run"]["info"]["run_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let worker = worker_with(&setup, |r| r.with_mlflow(settings(&uri, &experiment)));
    run_to_completion(&setup, worker, &job).await;
    let runs = mlflow.runs_of(&experiment, &job.id).await;
    assert_eq!(runs.len(), 2);
    for run in &runs {
        let expected = match run["info"]["run_id"].as_str() == Some(earlier.as_str()) {
            true => "FAILED",
            false => "FINISHED",
        };
        assert_eq!(run["info"]["status"], expected);
    }
}

/// `report_to: mlflow` on a worker without a tracking server: the job trains and its log says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_without_mlflow_says_so_in_the_job_log() {
    let setup = setup().await;
    let job = mlflow_job(&setup, 1, 1).await;
    let logs = run_to_completion(&setup, worker_with(&setup, |r| r), &job).await;
    let warnings = events(&logs, "tracker_warning");
    assert_eq!(warnings.len(), 1);
    assert!(
        logs.iter()
            .any(|l| l.entry.message.contains("no MLFLOW_TRACKING_URI"))
    );
}
