//! The SFT runner's test setup: a store and registry in a temporary directory with a capability
//! (`agent@1.0.0`) and datasets (`demos@0.1.0`: two usable rows and one that fits no shape;
//! `junk@0.1.0`: none usable), jobs on them, and a worker that runs them.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use dn_registry::{Registry, StorageConfig, Upload, UploadFile};
use dn_spec::{LoraTargets, LrSchedule};
use dn_store::prelude::*;
use dn_store::{NewJob, SqlStore};
use dn_types::{ArtifactRef, CapabilitySnapshot, SftConfig, TrainingExtras, TrainingJob};
use dn_worker::{SftRunner, Worker, WorkerConfig};

#[allow(unused_imports)] // not every test binary uses it
pub use dn_testkit::test_model_name as test_model;

pub fn upload(files: &[(&str, &str)]) -> Upload {
    let files = files
        .iter()
        .map(|(path, text)| UploadFile::in_memory(*path, text.to_string()))
        .collect();
    Upload::new(files, 1 << 20).unwrap()
}

pub struct Setup {
    pub store: Arc<SqlStore>,
    pub registry: Registry,
    pub _dir: tempfile::TempDir,
}

pub async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqlStore::open_data_dir(dir.path()).await.unwrap());
    let registry = Registry::new(
        &StorageConfig::Local {
            root: dir.path().join("storage"),
        },
        1 << 20,
    )
    .unwrap();
    registry
        .push_capability(
            "acme",
            &upload(&[
                (
                    "capability.yaml",
                    "schema: 1\nname: agent\nversion: 1.0.0\ndescription: d\n",
                ),
                ("agents/a.md", "---\nname: a\n---\nYou are the agent.\n"),
            ]),
        )
        .await
        .unwrap();
    let rows = "{\"prompt\":\"Hi\",\"completion\":\"Hello!\"}\n{\"nope\":1}\n{\"messages\":[{\"role\":\"user\",\"content\":\"2+2?\"},{\"role\":\"assistant\",\"content\":\"4\"}]}\n";
    registry
        .push_dataset(
            "acme",
            &upload(&[
                (
                    "dataset.yaml",
                    "name: demos\nversion: 0.1.0\nformat: jsonl\n",
                ),
                ("train.jsonl", rows),
            ]),
        )
        .await
        .unwrap();
    registry
        .push_dataset(
            "acme",
            &upload(&[
                (
                    "dataset.yaml",
                    "name: junk\nversion: 0.1.0\nformat: jsonl\n",
                ),
                ("train.jsonl", "{\"a\":1}\n{\"b\":2}\n"),
            ]),
        )
        .await
        .unwrap();
    Setup {
        store,
        registry,
        _dir: dir,
    }
}

pub async fn create_job(
    setup: &Setup,
    model: &str,
    dataset: &str,
    trajectories: &[&str],
    steps: u32,
) -> TrainingJob {
    create_job_with(setup, model, dataset, trajectories, steps, |_| {}).await
}

/// [`create_job`] with the config adjusted by `adjust` first.
pub async fn create_job_with(
    setup: &Setup,
    model: &str,
    dataset: &str,
    trajectories: &[&str],
    steps: u32,
    adjust: impl FnOnce(&mut SftConfig),
) -> TrainingJob {
    let dataset_ref = |name: &str| ArtifactRef::parse(&format!("{name}@0.1.0"), "dataset").unwrap();
    let mut config = SftConfig {
        dataset: Some(dataset_ref(dataset)),
        trajectory_datasets: trajectories.iter().map(|name| dataset_ref(name)).collect(),
        eval_dataset: Some(dataset_ref("demos")),
        max_sequence_length: 2048,
        batch_size: 8,
        gradient_accumulation_steps: 1,
        learning_rate: 1e-4,
        steps: Some(steps),
        epochs: None,
        lora_rank: 8,
        lora_alpha: 16,
        checkpoint_interval: 2,
        extras: TrainingExtras {
            lr_scheduler: LrSchedule::Cosine,
            warmup_steps: 1,
            lora_target_modules: LoraTargets::parse(&["q_proj", "v_proj"]).unwrap(),
            // Generation has tests of its own; these jobs need not spend time on it.
            eval_samples: 0,
            ..Default::default()
        },
    };
    adjust(&mut config);
    let map = config.to_map();
    insert_job(setup, model, &config, map).await
}

/// [`create_job`] with the stored config (as JSON) adjusted by `adjust`: what a database written by
/// another version of dn, or by hand, may hold.
pub async fn create_job_with_stored_config(
    setup: &Setup,
    model: &str,
    adjust: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>),
) -> TrainingJob {
    let job = create_job(setup, model, "demos", &[], 2).await;
    let mut map = job.config.clone();
    adjust(&mut map);
    let config = SftConfig::from_map(&job.config).unwrap();
    setup
        .store
        .cancel_job("acme", "main", &job.id)
        .await
        .unwrap();
    insert_job(setup, model, &config, map).await
}

async fn insert_job(
    setup: &Setup,
    model: &str,
    config: &SftConfig,
    map: serde_json::Map<String, serde_json::Value>,
) -> TrainingJob {
    // The snapshot as the server takes it when the job is created.
    let manifest = setup
        .registry
        .capability("acme", "agent", "1.0.0")
        .await
        .unwrap();
    let system_prompt_digest = manifest.system_prompt_digest;
    setup
        .store
        .create_job(NewJob {
            organization_id: "acme".into(),
            workspace_id: "main".into(),
            name: None,
            model: model.into(),
            project_ref: None,
            run_ref: None,
            dataset_ref: config.dataset.as_ref().map(ArtifactRef::to_wire),
            trajectory_dataset_refs: config
                .trajectory_datasets
                .iter()
                .map(ArtifactRef::to_wire)
                .collect(),
            capability: CapabilitySnapshot {
                artifact_id: None,
                name: "agent".into(),
                version: "1.0.0".into(),
                runtime_digest: None,
                organization_id: Some("acme".into()),
                content_digest: Some(manifest.digest),
                system_prompt_digest: Some(system_prompt_digest),
            },
            config: map,
            tags: vec![],
        })
        .await
        .unwrap()
}

pub fn worker(setup: &Setup) -> Worker {
    worker_with(setup, |runner| runner)
}

/// [`worker`] with its runner adjusted by `adjust`.
pub fn worker_with(setup: &Setup, adjust: impl FnOnce(SftRunner) -> SftRunner) -> Worker {
    let mut config = WorkerConfig::new("w");
    config.heartbeat = Duration::from_millis(200);
    let runner = SftRunner::new(setup.registry.clone(), setup._dir.path().join("work"));
    Worker::new(setup.store.clone(), Arc::new(adjust(runner)), config)
}

pub async fn run_job(
    setup: &Setup,
    model: &str,
    dataset: &str,
    trajectories: &[&str],
) -> TrainingJob {
    let job = create_job(setup, model, dataset, trajectories, 3).await;
    assert!(worker(setup).reap_and_run_once().await.unwrap());
    setup.store.get_job_by_id(&job.id).await.unwrap()
}

/// Runs `job` on `worker`, checks that it completed, and returns its log.
pub async fn run_to_completion(
    setup: &Setup,
    worker: Worker,
    job: &TrainingJob,
) -> Vec<dn_store::StoredLogEntry> {
    assert!(worker.reap_and_run_once().await.unwrap());
    let done = setup.store.get_job_by_id(&job.id).await.unwrap();
    assert_eq!(
        done.status,
        dn_types::JobStatus::Completed,
        "{:?}",
        done.error
    );
    setup
        .store
        .list_logs("acme", "main", &job.id, 0)
        .await
        .unwrap()
}

pub fn events<'a>(
    logs: &'a [dn_store::StoredLogEntry],
    name: &str,
) -> Vec<&'a serde_json::Map<String, serde_json::Value>> {
    logs.iter()
        .filter(|l| l.entry.data.get("event").and_then(|e| e.as_str()) == Some(name))
        .map(|l| &l.entry.data)
        .collect()
}
