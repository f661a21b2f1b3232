//! Every create-job check answers 4xx with a message naming the field or the NAME@VERSION.

mod common;

use common::*;
use reqwest::Method;
use serde_json::{Value, json};

const JOBS: &str = "/api/v1/org/acme/ws/main/training/jobs";

async fn create(server: &TestServer, body: Value) -> (u16, String) {
    let (status, answer) = server
        .call(Method::POST, JOBS, Some(&server.key_a), Some(body))
        .await;
    (
        status,
        answer["detail"].as_str().unwrap_or_default().to_owned(),
    )
}

#[tokio::test]
async fn bad_requests_name_what_is_wrong() {
    let server = start().await;
    push_fixtures(&server.client(&server.key_a), "acme").await;
    let base = docs_request(&server.model);
    let with = |edit: &dyn Fn(&mut Value)| {
        let mut body = base.clone();
        edit(&mut body);
        body
    };

    let cases: Vec<(Value, u16, &str)> = vec![
        (
            with(&|b| b["config"]["lora_rnk"] = json!(4)),
            422,
            "lora_rnk",
        ),
        (with(&|b| b["colour"] = json!("red")), 422, "colour"),
        (
            with(&|b| b["config"]["dataset_ref"]["tag"] = json!("x")),
            422,
            "config.dataset_ref",
        ),
        (with(&|b| b["backend"] = json!("ray")), 422, "backend"),
        (
            with(&|b| b["trainer_type"] = json!("rl")),
            422,
            "trainer_type",
        ),
        (
            with(&|b| {
                b.as_object_mut().unwrap().remove("model");
            }),
            422,
            "model",
        ),
        (
            with(&|b| b["config"]["batch_size"] = json!("eight")),
            422,
            "config.batch_size",
        ),
        (
            with(&|b| {
                let c = b["config"].as_object_mut().unwrap();
                c.remove("dataset_ref");
            }),
            422,
            "Tinker SFT jobs require dataset_ref or at least one trajectory_dataset_ref",
        ),
        (
            with(&|b| b["config"]["batch_size"] = json!(0)),
            422,
            "config.batch_size: must be >= 1",
        ),
        (
            with(&|b| b["config"]["steps"] = json!(-5)),
            422,
            "config.steps",
        ),
        (
            with(&|b| b["config"]["epochs"] = json!(0)),
            422,
            "config.epochs",
        ),
        (
            with(&|b| b["config"]["max_sequence_length"] = json!(0)),
            422,
            "config.max_sequence_length",
        ),
        (
            with(&|b| b["config"]["gradient_accumulation_steps"] = json!(0)),
            422,
            "config.gradient_accumulation_steps",
        ),
        (
            with(&|b| b["config"]["learning_rate"] = json!(0)),
            422,
            "config.learning_rate",
        ),
        (
            with(&|b| b["config"]["lora_rank"] = json!(0)),
            422,
            "config.lora_rank",
        ),
        // The two oversized configs of the hardening probe: refused before any work.
        (
            with(&|b| {
                b["config"]["lora_rank"] = json!(1024);
                b["config"]["batch_size"] = json!(65536);
                b["config"]["max_sequence_length"] = json!(1048576);
                b["config"]["steps"] = json!(100_000_000);
            }),
            422,
            "config.lora_rank: must be <= 512 (got 1024; the deployment's limit)",
        ),
        (
            with(&|b| b["config"]["max_sequence_length"] = json!(1048576)),
            422,
            "config.max_sequence_length: must be <= 131072",
        ),
        (
            with(&|b| b["config"]["batch_size"] = json!(65536)),
            422,
            "config.batch_size: must be <= 4096",
        ),
        (
            with(&|b| b["config"]["steps"] = json!(100_000_000)),
            422,
            "config.steps: must be <= 1000000",
        ),
        (
            with(&|b| b["config"]["lora_alpha"] = json!(-1)),
            422,
            "config.lora_alpha",
        ),
        (
            with(&|b| b["config"]["checkpoint_interval"] = json!(0)),
            422,
            "config.checkpoint_interval",
        ),
        (
            with(&|b| b["capability_ref"]["version"] = json!("latest")),
            422,
            "capability_ref",
        ),
        (
            with(&|b| b["config"]["dataset_ref"]["name"] = json!("../etc")),
            422,
            "config.dataset_ref",
        ),
        (
            with(&|b| b["model"] = json!("no-such/dir/model")),
            422,
            "model: model 'no-such/dir/model' is not in this deployment's catalog (",
        ),
        (
            with(&|b| b["config"]["dataset_ref"]["version"] = json!("9.9.9")),
            404,
            "config.dataset_ref: dataset support-demos@9.9.9 not found",
        ),
        (
            with(&|b| b["config"]["eval_dataset_ref"]["name"] = json!("nope")),
            404,
            "config.eval_dataset_ref: dataset nope@0.1.0 not found",
        ),
        (
            with(
                &|b| b["config"]["trajectory_dataset_refs"] = json!([{"name": "support-demos", "version": "0.1.0"}, {"name": "runs", "version": "1.0.0"}]),
            ),
            404,
            "config.trajectory_dataset_refs[1]: dataset runs@1.0.0 not found",
        ),
        (
            with(&|b| b["capability_ref"]["version"] = json!("2.0.0")),
            404,
            "capability_ref: capability support-agent@2.0.0 not found",
        ),
        (json!("not an object"), 422, "request body"),
        (
            with(&|b| b["name"] = json!("x".repeat(3 << 20))),
            413,
            "at most 2 MiB",
        ),
    ];
    for (body, status, needle) in cases {
        let (got, detail) = create(&server, body.clone()).await;
        assert_eq!(got, status, "{body} -> {detail}");
        assert!(
            detail.contains(needle),
            "{detail:?} should mention {needle:?}"
        );
    }

    // Trajectory datasets alone are enough; a local model directory is accepted as --model.
    let body = with(&|b| {
        let c = b["config"].as_object_mut().unwrap();
        c.remove("dataset_ref");
        c.insert(
            "trajectory_dataset_refs".into(),
            json!([{"name": "support-demos", "version": "0.1.0"}]),
        );
    });
    let (status, detail) = create(&server, body).await;
    assert_eq!(status, 200, "{detail}");
    let (status, _) = server
        .call(Method::POST, JOBS, Some(&server.key_a), Some(json!({})))
        .await;
    assert_eq!(status, 422);
    let (status, _) = server
        .call(
            Method::GET,
            "/api/v1/org/acme/ws/Bad_WS/training/jobs",
            Some(&server.key_a),
            None,
        )
        .await;
    assert_eq!(status, 422);
}
