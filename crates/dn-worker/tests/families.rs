//! A job on each family's tiny model directory (tests/fixtures/families) trains, evaluates and stores a
//! PEFT adapter over every projection the family has; the job log names the family and says once what
//! the chat template did to the system prompt; a LoRA target the family lacks fails the job at once.

mod common;

use std::path::PathBuf;

use common::sft::{create_job_with, events, setup, worker};
use dn_store::prelude::*;
use dn_types::JobStatus;

fn model_dir(family: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/families")
        .join(family)
        .join("model")
        .to_string_lossy()
        .into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_trains_every_family() {
    let setup = setup().await;
    // (family, target_modules, LoRA pairs over its 3 layers, what it says of the system prompt)
    for (family, targets, pairs, system_note) in [
        ("llama", 7, 21, None),
        ("mistral", 7, 21, Some("leaves the system message out")),
        ("qwen2", 7, 21, None),
        ("qwen3", 7, 21, None),
        ("gemma2", 7, 21, Some("has no system role")),
        ("gemma3", 7, 21, None),
        ("phi3", 4, 12, None),
        // Attention on every layer, and gate_up and down on the experts of each sparse layer (qwen3_moe's
        // middle layer is dense: its MLP is not adapted, as PEFT cannot load such a pair).
        ("qwen3_moe", 4, 12 + 2 * 2, None),
        ("qwen2_moe", 4, 12 + 3 * 2, None),
        ("gpt_oss", 4, 12 + 3 * 2, None),
        (
            "mixtral",
            4,
            12 + 3 * 2,
            Some("leaves the system message out"),
        ),
    ] {
        let job = create_job_with(&setup, &model_dir(family), "demos", &[], 2, |c| {
            c.extras.lora_target_modules = dn_spec::LoraTargets::AllLinear;
            c.learning_rate = 1e-2;
        })
        .await;
        assert!(worker(&setup).reap_and_run_once().await.unwrap());
        let job = setup.store.get_job_by_id(&job.id).await.unwrap();
        assert_eq!(
            job.status,
            JobStatus::Completed,
            "{family}: {:?}",
            job.error
        );
        let logs = setup
            .store
            .list_logs("acme", "main", &job.id, 0)
            .await
            .unwrap();
        assert_eq!(events(&logs, "data_prepared")[0]["model_family"], family);
        let notes: Vec<&str> = logs
            .iter()
            .filter(|l| l.entry.data.get("event").and_then(|e| e.as_str()) == Some("system_prompt"))
            .map(|l| l.entry.message.as_str())
            .collect();
        match system_note {
            Some(note) => {
                assert_eq!(notes.len(), 1, "{family}: said once: {notes:?}");
                assert!(notes[0].contains(note), "{family}: {}", notes[0]);
            }
            None => assert!(notes.is_empty(), "{family}: {notes:?}"),
        }
        let losses: Vec<f64> = events(&logs, "step_complete")
            .iter()
            .map(|s| s["train/loss"].as_f64().unwrap())
            .collect();
        assert_eq!(losses.len(), 2);
        assert!(
            losses.iter().all(|l| l.is_finite() && *l > 0.0),
            "{family}: {losses:?}"
        );
        assert_eq!(events(&logs, "eval_complete").len(), 2, "{family}");
        let adapter = setup
            ._dir
            .path()
            .join("storage")
            .join(job.artifacts["adapter"].as_str().unwrap());
        let config: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(adapter.join("adapter_config.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(
            config["target_modules"].as_array().unwrap().len(),
            targets,
            "{family}"
        );
        let tensors = std::fs::read(adapter.join("adapter_model.safetensors")).unwrap();
        let names = safetensors::SafeTensors::deserialize(&tensors)
            .unwrap()
            .names()
            .len();
        assert_eq!(names, pairs * 2, "{family}: pairs x (A, B)");
        let start = &events(&logs, "training_start")[0];
        let groups = &start["trainable_parameters_by_group"];
        if family.ends_with("moe") || family == "mixtral" || family == "gpt_oss" {
            assert_eq!(
                config["target_parameters"],
                serde_json::json!(["mlp.experts.gate_up_proj", "mlp.experts.down_proj"]),
                "{family}"
            );
            assert!(
                groups["experts"].as_u64().unwrap() > 0,
                "{family}: {groups}"
            );
            assert!(groups.get("mlp").is_none(), "{family}: {groups}");
            let load = &events(&logs, "eval_complete")[0]["router_load"];
            assert!(!load.as_array().unwrap().is_empty(), "{family}: {load}");
        } else {
            assert!(config["target_parameters"].is_null(), "{family}");
            assert!(groups["mlp"].as_u64().unwrap() > 0, "{family}: {groups}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lora_target_the_family_lacks_fails_the_job_naming_it() {
    let setup = setup().await;
    let job = create_job_with(&setup, &model_dir("phi3"), "demos", &[], 2, |c| {
        c.extras.lora_target_modules = dn_spec::LoraTargets::parse(&["q_proj"]).unwrap();
    })
    .await;
    assert!(worker(&setup).reap_and_run_once().await.unwrap());
    let job = setup.store.get_job_by_id(&job.id).await.unwrap();
    assert_eq!(job.status, JobStatus::Failed);
    let error = job.error.unwrap_or_default();
    assert!(
        error.contains("phi3") && error.contains("q_proj") && error.contains("qkv_proj"),
        "{error}"
    );
    assert_eq!(job.attempt, 1, "bad input is not retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_dn_cannot_train_fails_at_once_naming_it() {
    let setup = setup().await;
    let dir = tempfile::tempdir().unwrap();
    for name in [
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
    ] {
        std::fs::copy(
            PathBuf::from(model_dir("qwen2")).join(name),
            dir.path().join(name),
        )
        .unwrap();
    }
    std::fs::write(
        dir.path().join("config.json"),
        r#"{"model_type": "deepseek_v3", "hidden_size": 32, "intermediate_size": 48,
            "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 306, "n_routed_experts": 4}"#,
    )
    .unwrap();
    let model = dir.path().to_string_lossy().into_owned();
    let job = create_job_with(&setup, &model, "demos", &[], 2, |_| {}).await;
    assert!(worker(&setup).reap_and_run_once().await.unwrap());
    let job = setup.store.get_job_by_id(&job.id).await.unwrap();
    assert_eq!(job.status, JobStatus::Failed);
    let error = job.error.unwrap_or_default();
    assert!(
        error.contains("deepseek_v3") && error.contains("mixture-of-experts"),
        "{error}"
    );
    let logs = setup
        .store
        .list_logs("acme", "main", &job.id, 0)
        .await
        .unwrap();
    assert!(
        events(&logs, "data_prepared").is_empty(),
        "failed before preparing data"
    );
}
