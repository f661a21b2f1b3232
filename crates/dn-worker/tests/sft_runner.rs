//! The SFT runner end to end on the real test model: a pushed capability and datasets are prepared,
//! trained for a few steps, evaluated and checkpointed into storage; unusable inputs fail clearly.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::sft::*;
use dn_store::prelude::*;
use dn_types::JobStatus;
use dn_worker::{SftRunner, Worker, WorkerConfig};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_trains_evaluates_and_stores_its_checkpoints() {
    let Some(model) = test_model() else { return };
    let setup = setup().await;
    let job = run_job(&setup, &model, "demos", &["demos"]).await;
    assert_eq!(job.status, JobStatus::Completed, "{:?}", job.error);
    let logs = setup
        .store
        .list_logs("acme", "main", &job.id, 0)
        .await
        .unwrap();
    let prepared = events(&logs, "data_prepared");
    // demos twice (dataset + trajectory dataset): 2 usable rows each, 1 skipped each.
    assert_eq!(prepared[0]["train"]["examples"], 4);
    assert_eq!(prepared[0]["eval"]["examples"], 2);
    assert!(logs.iter().any(|l| {
        l.entry
            .message
            .contains("demos@0.1.0/train.jsonl: row 2: matches no row shape")
    }));
    assert_eq!(events(&logs, "training_start")[0]["total_steps"], 3);
    let steps = events(&logs, "step_complete");
    assert_eq!(steps.len(), 3);
    for (i, step) in steps.iter().enumerate() {
        assert_eq!(step["step"], i as u64 + 1);
        assert!(step["train/loss"].as_f64().unwrap() > 0.0);
        assert_eq!(step["train/num_sequences"], 4);
        assert!(step["train/num_tokens"].as_u64().unwrap() > 0);
        assert!(step["train/tokens_per_second"].as_f64().unwrap() > 0.0);
    }
    let saved: Vec<&str> = events(&logs, "checkpoint_saved")
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(saved, ["step-000002", "final"]);
    let eval = events(&logs, "eval_complete");
    let eval_steps: Vec<u64> = eval.iter().map(|e| e["step"].as_u64().unwrap()).collect();
    assert_eq!(
        eval_steps,
        [0, 3],
        "the base model's eval loss, then the trained one"
    );
    assert_eq!(events(&logs, "training_end").len(), 1);

    assert_eq!(job.metrics["train/loss"].as_array().unwrap().len(), 3);
    assert_eq!(job.metrics["steps"], serde_json::json!([1, 2, 3]));
    assert_eq!(job.metrics["train/steps"], 3);
    assert_eq!(job.metrics["device"], "cpu");
    assert_eq!(job.metrics["eval/loss"], eval[1]["eval/loss"]);
    assert_eq!(job.metrics["eval/num_examples"], 2);
    assert_eq!(job.artifacts["capability"], "agent@1.0.0");
    assert_eq!(job.artifacts["dataset"], "demos@0.1.0");
    let checkpoints = job.artifacts["checkpoints"].as_array().unwrap();
    assert_eq!(checkpoints.last().unwrap()["name"], "final");
    let adapter = setup
        ._dir
        .path()
        .join("storage")
        .join(job.artifacts["adapter"].as_str().unwrap());
    assert!(
        adapter.join("adapter_model.safetensors").is_file(),
        "{}",
        adapter.display()
    );
    let adapter_config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(adapter.join("adapter_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        adapter_config["target_modules"],
        serde_json::json!(["q_proj", "v_proj"])
    );
    assert_eq!(
        (
            adapter_config["r"].clone(),
            adapter_config["lora_alpha"].clone()
        ),
        (8.into(), 16.0.into())
    );
    // One warmup step, then cosine decay from step 2 of 3.
    let rates: Vec<f64> =
        serde_json::from_value(job.metrics["train/learning_rate"].clone()).unwrap();
    assert_eq!(rates.len(), 3);
    assert!(
        (rates[0] - 1e-4).abs() < 1e-12 && (rates[1] - 1e-4).abs() < 1e-12,
        "{rates:?}"
    );
    assert!((rates[2] - 5e-5).abs() < 1e-12, "{rates:?}");
    assert!(adapter.join(dn_registry::COMMIT_MARKER).is_file());
    assert!(
        !setup._dir.path().join("work").join(&job.id).exists(),
        "local scratch is removed once checkpoints are stored"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_fail_clearly_on_unusable_inputs() {
    let setup = setup().await;
    let job = run_job(&setup, "/no/such/model.gguf", "demos", &["demos"]).await;
    assert_eq!(job.status, JobStatus::Failed);
    assert!(
        job.error
            .as_deref()
            .unwrap()
            .contains("/no/such/model.gguf"),
        "{:?}",
        job.error
    );

    let Some(model) = test_model() else { return };
    // Only junk rows in the dataset, but the trajectory dataset is fine: still trains on those.
    let job = run_job(&setup, &model, "junk", &["demos"]).await;
    assert_eq!(job.status, JobStatus::Completed, "{:?}", job.error);
    assert_eq!(job.metrics["train/num_examples"], 2);
    // Nothing usable at all: the reference's message, with the counts and the first errors.
    let job = run_job(&setup, &model, "junk", &[]).await;
    let error = job.error.unwrap();
    assert!(
        error.starts_with(
            "Training inputs did not produce any usable conversations: 2 row(s) read, 2 skipped"
        ),
        "{error}"
    );
    assert!(
        error.contains("junk@0.1.0/train.jsonl: row 1: matches no row shape"),
        "{error}"
    );
}

/// A stored config holding a value this build does not know (written by another version of dn, or by
/// hand) fails the job when it is claimed, naming the field, before anything is read or trained.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_config_with_an_unknown_value_fails_at_claim_naming_the_field() {
    let setup = setup().await;
    for (field, value, expected) in [
        (
            "train_on",
            json!("bogus"),
            "invalid job config: config.train_on: unknown value \"bogus\" (one of assistant, last_assistant, all)",
        ),
        (
            "lr_scheduler",
            json!("step"),
            "config.lr_scheduler: unknown value \"step\"",
        ),
        (
            "lora_target_modules",
            json!(["q_proj", "lm_head"]),
            "config.lora_target_modules[1]: unknown value \"lm_head\"",
        ),
        (
            "dataset_ref",
            json!({"name": "../x", "version": "0.1.0"}),
            "config.dataset_ref: organization in '../x'",
        ),
    ] {
        let job = create_job_with_stored_config(&setup, "/no/model/needed", |config| {
            config.insert(field.into(), value);
        })
        .await;
        assert!(worker(&setup).reap_and_run_once().await.unwrap());
        let job = setup.store.get_job_by_id(&job.id).await.unwrap();
        assert_eq!(job.status, JobStatus::Failed, "{field}");
        let error = job.error.unwrap();
        assert!(error.contains(expected), "{field}: {error}");
        assert!(!error.contains("/no/model/needed"), "{error}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_job_stops_at_a_step_boundary_when_cancelled() {
    let Some(model) = test_model() else { return };
    let setup = setup().await;
    let job = create_job(&setup, &model, "demos", &["demos"], 500).await;
    let running = {
        let worker = worker(&setup);
        tokio::spawn(async move { worker.reap_and_run_once().await.unwrap() })
    };
    // Wait (bounded) for the first step, then ask to cancel.
    let mut stepped = false;
    for _ in 0..600 {
        let logs = setup
            .store
            .list_logs("acme", "main", &job.id, 0)
            .await
            .unwrap();
        if !events(&logs, "step_complete").is_empty() {
            stepped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(stepped, "no step within 120 s");
    setup
        .store
        .cancel_job("acme", "main", &job.id)
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(120), running)
        .await
        .expect("the worker stopped within 120 s")
        .unwrap();
    let job = setup.store.get_job_by_id(&job.id).await.unwrap();
    assert_eq!(job.status, JobStatus::Cancelled, "{:?}", job.error);
    let steps = job.metrics["train/loss"].as_array().unwrap().len();
    assert!((1..500).contains(&steps), "{steps} step(s) recorded");
    let epochs = job.metrics["train/epochs_completed"].as_f64().unwrap();
    assert!(epochs > 0.0, "epochs completed so far: {epochs}");
    let logs = setup
        .store
        .list_logs("acme", "main", &job.id, 0)
        .await
        .unwrap();
    assert!(events(&logs, "training_end").is_empty());
    assert!(
        !setup._dir.path().join("work").join(&job.id).exists(),
        "scratch removed after a cancel too"
    );
}

/// A checkpoint that cannot be written (as when the disk is full) fails the attempt with the path in the
/// error; it is retried (it may pass), and once the retries are spent the job fails with that error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_checkpoint_is_retried_then_fails_the_job_naming_the_path() {
    let setup = setup().await;
    let Some(model) = test_model() else { return };
    let job = create_job(&setup, &model, "demos", &[], 1).await;
    let work = setup._dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::write(
        work.join(&job.id),
        "a file where the job's checkpoint directory should be",
    )
    .unwrap();
    let mut config = WorkerConfig::new("w");
    config.max_retries = 1;
    config.retry_backoff = Duration::from_millis(20);
    let worker = Worker::new(
        setup.store.clone(),
        Arc::new(SftRunner::new(setup.registry.clone(), work.clone())),
        config,
    );
    assert!(worker.reap_and_run_once().await.unwrap());
    let retried = setup.store.get_job_by_id(&job.id).await.unwrap();
    assert_eq!(retried.status, JobStatus::Queued, "{:?}", retried.error);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(worker.reap_and_run_once().await.unwrap());
    let failed = setup.store.get_job_by_id(&job.id).await.unwrap();
    assert_eq!((failed.status, failed.attempt), (JobStatus::Failed, 2));
    let error = failed.error.unwrap();
    assert!(
        error.starts_with("training failed:") && error.contains(&job.id),
        "{error}"
    );
}

/// A dataset file that storage cannot deliver (here its blob is a directory) is storage trouble, not bad
/// input: the attempt goes back to the queue for a retry instead of failing the job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dataset_storage_cannot_deliver_is_retried_not_failed() {
    let setup = setup().await;
    let Some(model) = test_model() else { return };
    let job = create_job(&setup, &model, "demos", &[], 1).await;
    let manifest = setup
        .registry
        .dataset("acme", "demos", "0.1.0")
        .await
        .unwrap();
    let entry = manifest
        .files
        .iter()
        .find(|f| f.path == "train.jsonl")
        .unwrap();
    let blob = setup
        ._dir
        .path()
        .join("storage/blobs/sha256")
        .join(entry.sha256.trim_start_matches("sha256:"));
    std::fs::remove_file(&blob).unwrap();
    std::fs::create_dir(&blob).unwrap();
    assert!(worker(&setup).reap_and_run_once().await.unwrap());
    let retried = setup.store.get_job_by_id(&job.id).await.unwrap();
    assert_eq!(retried.status, JobStatus::Queued, "{:?}", retried.error);
    let logs = setup
        .store
        .list_logs("acme", "main", &job.id, 0)
        .await
        .unwrap();
    assert!(
        logs.iter()
            .any(|l| l.entry.message.contains("dataset demos@0.1.0")),
        "{:?}",
        logs.iter().map(|l| &l.entry.message).collect::<Vec<_>>()
    );
}

/// With `save_total_limit`, storage keeps only the newest step checkpoints (and `final`); the older ones
/// are deleted once newer ones are committed, and the artifacts list what is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_newest_checkpoints_are_kept_with_a_save_total_limit() {
    let Some(model) = test_model() else { return };
    let setup = setup().await;
    let job = create_job_with(&setup, &model, "demos", &[], 5, |config| {
        config.checkpoint_interval = 1;
        config.extras.save_total_limit = Some(2);
    })
    .await;
    assert!(worker(&setup).reap_and_run_once().await.unwrap());
    let job = setup.store.get_job_by_id(&job.id).await.unwrap();
    assert_eq!(job.status, JobStatus::Completed, "{:?}", job.error);
    let kept = ["step-000003", "step-000004", "final"];
    let listed: Vec<&str> = job.artifacts["checkpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(listed, kept);
    assert_eq!(
        setup
            .registry
            .committed_checkpoints("acme", &job.id)
            .await
            .unwrap(),
        kept
    );
    let deleted = setup._dir.path().join(format!(
        "storage/jobs/acme/{}/checkpoints/step-000001",
        job.id
    ));
    let leftovers = std::fs::read_dir(&deleted).map_or(0, |d| d.count());
    assert_eq!(leftovers, 0, "nothing of step-000001 is left in storage");
    let logs = setup
        .store
        .list_logs("acme", "main", &job.id, 0)
        .await
        .unwrap();
    let names: Vec<&str> = events(&logs, "checkpoint_deleted")
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["step-000001", "step-000002"]);
}

/// A cancel that arrives while the data is still being rendered ends the job within seconds: here a slow
/// (but not runaway) template and 400 conversations would take minutes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_during_data_preparation_ends_the_job_at_once() {
    let setup = setup().await;
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/families/llama/model");
    let model_dir = setup._dir.path().join("slow-model");
    std::fs::create_dir_all(&model_dir).unwrap();
    for entry in std::fs::read_dir(&fixture).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, model_dir.join(path.file_name().unwrap())).unwrap();
    }
    // ~4M instructions per render of a real conversation, nothing for the load probes.
    std::fs::write(
        model_dir.join("chat_template.jinja"),
        "{% if messages | length > 2 %}{% for a in range(2000) %}{% for b in range(2000) %}\
         {% endfor %}{% endfor %}{% endif %}\
         {% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}\
         {% if add_generation_prompt %}<assistant>{% endif %}",
    )
    .unwrap();
    let row = "{\"messages\":[{\"role\":\"user\",\"content\":\"q\"},{\"role\":\"assistant\",\"content\":\"a\"}]}\n";
    setup
        .registry
        .push_dataset(
            "acme",
            &upload(&[
                (
                    "dataset.yaml",
                    "name: many\nversion: 0.1.0\nformat: jsonl\n",
                ),
                ("train.jsonl", &row.repeat(400)),
            ]),
        )
        .await
        .unwrap();
    let job = create_job(&setup, &model_dir.display().to_string(), "many", &[], 5).await;
    let running = {
        let worker = worker(&setup);
        tokio::spawn(async move { worker.reap_and_run_once().await.unwrap() })
    };
    for _ in 0..100 {
        let current = setup.store.get_job_by_id(&job.id).await.unwrap();
        if current.status == JobStatus::Running {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    setup
        .store
        .cancel_job("acme", "main", &job.id)
        .await
        .unwrap();
    let asked = std::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(30), running)
        .await
        .expect("the worker stopped within 30 s")
        .unwrap();
    let job = setup.store.get_job_by_id(&job.id).await.unwrap();
    assert_eq!(job.status, JobStatus::Cancelled, "{:?}", job.error);
    assert!(
        asked.elapsed() < Duration::from_secs(15),
        "{:?}",
        asked.elapsed()
    );
}
