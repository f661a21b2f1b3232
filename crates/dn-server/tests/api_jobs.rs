//! Job routes end to end against an in-process server: the docs' example, every field of the job record,
//! list filters and pagination, cancel, retry, logs, artifacts, catalog, auth.

mod common;

use common::*;
use dn_store::prelude::*;
use reqwest::Method;
use serde_json::json;

const JOBS: &str = "/api/v1/org/acme/ws/main/training/jobs";

#[tokio::test]
async fn health_and_openapi_need_no_key() {
    let server = start().await;
    for path in ["/api/v1/health", "/health"] {
        let (status, body) = server.call(Method::GET, path, None, None).await;
        assert_eq!((status, body["status"].as_str()), (200, Some("ok")));
    }
    let (status, doc) = server.call(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(status, 200);
    let paths = doc["paths"].as_object().unwrap();
    for route in [
        "/api/v1/org/{org}/ws/{ws}/training/jobs",
        "/api/v1/org/{org}/ws/{ws}/training/jobs/{id}/retry",
        "/api/v1/training/catalog",
        "/api/v1/org/{org}/datasets",
        "/api/v1/org/{org}/capabilities/{name}/{version}",
        "/api/v1/org/{org}/datasets/{name}/{version}/files/{path}",
        "/api/v1/org/{org}/ws/{ws}/training/jobs/{id}/logs/stream",
    ] {
        assert!(paths.contains_key(route), "openapi lacks {route}");
    }
    // Each documented route is one declaration: what the router serves is what the document lists.
    assert!(
        paths
            .keys()
            .all(|p| p.starts_with("/api/v1/") && !p.contains("{*"))
    );
    assert_eq!(paths.len(), 21, "{:?}", paths.keys().collect::<Vec<_>>());
    assert!(doc["components"]["schemas"]["CreateTinkerSftJobRequest"].is_object());
}

#[tokio::test]
async fn keys_are_required_and_both_header_styles_work() {
    let server = start().await;
    let (status, body) = server.call(Method::GET, JOBS, None, None).await;
    assert_eq!(status, 401);
    assert!(body["detail"].as_str().unwrap().contains("X-API-Key"));
    let (status, _) = server
        .call(Method::GET, JOBS, Some("dn_not_a_key"), None)
        .await;
    assert_eq!(status, 401);
    let (status, _) = server
        .call(Method::GET, JOBS, Some(&server.key_a), None)
        .await;
    assert_eq!(status, 200);
    let bearer = reqwest::Client::new()
        .get(format!("{}{JOBS}", server.url))
        .bearer_auth(&server.key_a)
        .send()
        .await
        .unwrap();
    assert_eq!(bearer.status(), 200);
    // Routes are also served without the /api/v1 prefix.
    let (status, _) = server
        .call(
            Method::GET,
            "/org/acme/ws/main/training/jobs",
            Some(&server.key_a),
            None,
        )
        .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn the_docs_example_creates_a_job_with_every_field() {
    let server = start().await;
    push_fixtures(&server.client(&server.key_a), "acme").await;
    let (status, job) = server.create_docs_job().await;
    assert_eq!(status, 200, "{job}");
    for field in [
        "id",
        "organization_id",
        "workspace_id",
        "status",
        "backend",
        "trainer_type",
        "model",
        "dataset_ref",
        "trajectory_dataset_refs",
        "capability",
        "config",
        "metrics",
        "artifacts",
        "tags",
        "created_at",
        "updated_at",
    ] {
        assert!(job.get(field).is_some(), "job lacks {field}: {job}");
    }
    assert_eq!(job["organization_id"], "acme");
    assert_eq!(job["workspace_id"], "main");
    assert_eq!(job["status"], "queued");
    assert_eq!(
        (job["backend"].as_str(), job["trainer_type"].as_str()),
        (Some("tinker"), Some("sft"))
    );
    assert_eq!(
        job["dataset_ref"],
        json!({"name": "support-demos", "version": "0.1.0"})
    );
    let cap = &job["capability"];
    assert_eq!(
        (cap["name"].as_str(), cap["version"].as_str()),
        (Some("support-agent"), Some("1.0.0"))
    );
    assert!(cap["artifact_id"].as_str().unwrap().starts_with("sha256:"));
    let expected_prompt = format!("sha256:{}", sha256_hex("You are a support agent."));
    assert_eq!(
        cap["system_prompt_digest"].as_str(),
        Some(expected_prompt.as_str())
    );
    let config = &job["config"];
    assert_eq!(config["steps"], 100);
    assert_eq!(config["batch_size"], 8);
    assert_eq!(config["lora_rank"], 16);
    assert_eq!(config["lora_alpha"], 32, "default alpha = 2 x rank");
    assert_eq!(config["max_sequence_length"], 2048);
    assert_eq!(config["eval_dataset_ref"]["name"], "support-eval");
    // Null fields are omitted, not sent as null.
    for absent in [
        "name",
        "error",
        "started_at",
        "completed_at",
        "cancel_requested_at",
        "project_ref",
    ] {
        assert!(
            job.get(absent).is_none(),
            "{absent} should be omitted: {job}"
        );
    }
    // The typed client parses it too.
    let typed = server
        .client(&server.key_a)
        .get_job("acme", "main", job["id"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(typed.id, job["id"].as_str().unwrap());
}

fn sha256_hex(text: &str) -> String {
    use sha2::{Digest, Sha256};
    format!("{:x}", Sha256::digest(text.as_bytes()))
}

#[tokio::test]
async fn list_filters_paginate_and_lifecycle_routes_work() {
    let server = start().await;
    let client = server.client(&server.key_a);
    push_fixtures(&client, "acme").await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let mut body = docs_request(&server.model);
        body["name"] = json!(format!("job-{i}"));
        body["project_ref"] = json!(if i % 2 == 0 { "even" } else { "odd" });
        let (status, job) = server
            .call(Method::POST, JOBS, Some(&server.key_a), Some(body))
            .await;
        assert_eq!(status, 200, "{job}");
        ids.push(job["id"].as_str().unwrap().to_owned());
    }
    let (status, list) = server
        .call(
            Method::GET,
            &format!("{JOBS}?page=2&page_size=2"),
            Some(&server.key_a),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        (
            list["total"].as_i64(),
            list["page"].as_i64(),
            list["page_size"].as_i64()
        ),
        (Some(5), Some(2), Some(2))
    );
    assert_eq!(list["items"][0]["id"], ids[2].as_str());
    let (_, even) = server
        .call(
            Method::GET,
            &format!("{JOBS}?project_ref=even&status=queued&backend=tinker&trainer_type=sft"),
            Some(&server.key_a),
            None,
        )
        .await;
    assert_eq!(even["total"], 3);
    let (status, bad) = server
        .call(
            Method::GET,
            &format!("{JOBS}?status=bogus"),
            Some(&server.key_a),
            None,
        )
        .await;
    assert_eq!(status, 422);
    assert!(bad["detail"].as_str().unwrap().starts_with("status:"));
    let (status, _) = server
        .call(
            Method::GET,
            &format!("{JOBS}?page_size=1000"),
            Some(&server.key_a),
            None,
        )
        .await;
    assert_eq!(status, 422);

    // Cancel a queued job: cancelled at once. Retry it: queued again, same id.
    let id = &ids[0];
    let (status, cancelled) = server
        .call(
            Method::POST,
            &format!("{JOBS}/{id}/cancel"),
            Some(&server.key_a),
            None,
        )
        .await;
    assert_eq!(
        (status, cancelled["status"].as_str()),
        (200, Some("cancelled"))
    );
    let (status, retried) = server
        .call(
            Method::POST,
            &format!("{JOBS}/{id}/retry"),
            Some(&server.key_a),
            None,
        )
        .await;
    assert_eq!(
        (status, retried["status"].as_str(), retried["id"].as_str()),
        (200, Some("queued"), Some(id.as_str()))
    );
    let (status, conflict) = server
        .call(
            Method::POST,
            &format!("{JOBS}/{id}/retry"),
            Some(&server.key_a),
            None,
        )
        .await;
    assert_eq!(status, 409);
    assert!(
        conflict["detail"]
            .as_str()
            .unwrap()
            .contains("only failed or cancelled")
    );

    // A running job gets cancel_requested_at and stays running until its worker stops.
    let claimed = server
        .store
        .claim_job("test-worker", std::time::Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    let running_id = claimed.job.id.clone();
    let (_, requested) = server
        .call(
            Method::POST,
            &format!("{JOBS}/{running_id}/cancel"),
            Some(&server.key_a),
            None,
        )
        .await;
    assert_eq!(requested["status"], "running");
    assert!(requested["cancel_requested_at"].is_string());

    let (status, logs) = server
        .call(
            Method::GET,
            &format!("{JOBS}/{id}/logs"),
            Some(&server.key_a),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let messages: Vec<&str> = logs["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    assert_eq!(messages[0], "job queued");
    assert!(messages.iter().any(|m| m.starts_with("retry requested")));
    for entry in logs["items"].as_array().unwrap() {
        assert!(
            entry["timestamp"].is_string()
                && ["debug", "info", "warning", "error"]
                    .contains(&entry["level"].as_str().unwrap())
        );
    }
    let last_seq = logs["items"].as_array().unwrap().last().unwrap()["data"]["seq"]
        .as_i64()
        .unwrap();
    let (_, none_after) = server
        .call(
            Method::GET,
            &format!("{JOBS}/{id}/logs?after={last_seq}"),
            Some(&server.key_a),
            None,
        )
        .await;
    assert_eq!(none_after["items"], json!([]));

    let (status, artifacts) = server
        .call(
            Method::GET,
            &format!("{JOBS}/{id}/artifacts"),
            Some(&server.key_a),
            None,
        )
        .await;
    assert_eq!((status, &artifacts), (200, &json!({"artifacts": {}})));
    let (status, missing) = server
        .call(
            Method::GET,
            &format!("{JOBS}/no-such-id"),
            Some(&server.key_a),
            None,
        )
        .await;
    assert_eq!(status, 404);
    assert!(missing["detail"].as_str().unwrap().contains("no-such-id"));
}

#[tokio::test]
async fn catalog_lists_configured_models_with_filters() {
    let server = start().await;
    let (status, catalog) = server
        .call(
            Method::GET,
            "/api/v1/training/catalog",
            Some(&server.key_a),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        (catalog["total"].as_i64(), catalog["limit"].as_i64()),
        (Some(1), Some(20))
    );
    let model = &catalog["models"][0];
    assert_eq!(model["tinker_id"], server.model.as_str());
    assert_eq!(
        (
            model["family"].as_str(),
            model["type"].as_str(),
            model["context_length"].as_i64()
        ),
        (Some("llama"), Some("dense"), Some(512))
    );
    assert_eq!(model["supported_algorithms"], json!(["sft"]));
    let (_, none) = server
        .call(
            Method::GET,
            "/api/v1/training/catalog?family=qwen2&min_size_b=1",
            Some(&server.key_a),
            None,
        )
        .await;
    assert_eq!(none["total"], 0);
    let (_, found) = server
        .call(
            Method::GET,
            "/api/v1/training/catalog?query=TINY",
            Some(&server.key_a),
            None,
        )
        .await;
    assert_eq!(found["total"], 1);
    let (status, _) = server
        .call(Method::GET, "/api/v1/training/catalog", None, None)
        .await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn unknown_routes_answer_json_404() {
    let server = start().await;
    let (status, body) = server
        .call(Method::GET, "/api/v1/nope", Some(&server.key_a), None)
        .await;
    assert_eq!(status, 404);
    assert!(body["detail"].is_string());
}

#[tokio::test]
async fn metrics_count_jobs_attempts_and_renewals_without_a_key() {
    let server = start().await;
    let client = server.client(&server.key_a);
    push_fixtures(&client, "acme").await;
    for _ in 0..2 {
        let (status, job) = server.create_docs_job().await;
        assert_eq!(status, 200, "{job}");
    }
    let lease = std::time::Duration::from_secs(60);
    let claimed = server.store.claim_job("w1", lease).await.unwrap().unwrap();
    server.store.heartbeat(&claimed.lease, lease).await.unwrap();
    let response = reqwest::get(format!("{}/metrics", server.url))
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = response.text().await.unwrap();
    for line in [
        "dn_jobs{status=\"queued\"} 1",
        "dn_jobs{status=\"running\"} 1",
        "dn_jobs{status=\"failed\"} 0",
        "dn_reaped_leases_total 0",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
    }
    let renewals = text
        .lines()
        .find_map(|l| l.strip_prefix("dn_lease_renewals_total "))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap();
    assert!(renewals >= 1, "{text}");
}

/// The events of a finished stream: `(id, event, data)`.
fn sse_events(body: &str) -> Vec<(Option<i64>, String, String)> {
    body.split("\n\n")
        .filter_map(|block| {
            let (mut id, mut event, mut data) = (None, None, String::new());
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    id = v.trim().parse().ok();
                } else if let Some(v) = line.strip_prefix("event:") {
                    event = Some(v.trim().to_owned());
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim_start());
                }
            }
            event.map(|e| (id, e, data))
        })
        .collect()
}

#[tokio::test]
async fn log_stream_resumes_after_the_last_event_id_and_ends_with_the_status() {
    let server = start().await;
    let client = server.client(&server.key_a);
    push_fixtures(&client, "acme").await;
    let (_, job) = server.create_docs_job().await;
    let id = job["id"].as_str().unwrap().to_owned();
    let lease = std::time::Duration::from_secs(60);
    let claimed = server.store.claim_job("w1", lease).await.unwrap().unwrap();
    let entries: Vec<dn_store::NewLogEntry> = (1..=3)
        .map(|step| dn_store::NewLogEntry {
            level: dn_types::LogLevel::Info,
            message: format!("step {step}"),
            data: json!({"event": "step_complete", "step": step})
                .as_object()
                .unwrap()
                .clone(),
        })
        .collect();
    server
        .store
        .append_progress(&claimed.lease, &entries, None)
        .await
        .unwrap();
    let url = format!("{}{JOBS}/{id}/logs/stream", server.url);
    let http = reqwest::Client::new();
    // Live: the first events arrive while the job still runs.
    let mut live = http
        .get(&url)
        .header("X-API-Key", &server.key_a)
        .send()
        .await
        .unwrap();
    assert_eq!(live.status().as_u16(), 200);
    let first = String::from_utf8(live.chunk().await.unwrap().unwrap().to_vec()).unwrap();
    assert!(first.contains("event: log"), "{first}");
    drop(live);
    let all = server
        .store
        .list_logs("acme", "main", &id, 0)
        .await
        .unwrap();
    let second_step = all
        .iter()
        .find(|e| e.entry.message == "step 2")
        .unwrap()
        .seq;
    let outcome = dn_store::JobOutcome::Completed {
        metrics: Default::default(),
        artifacts: Default::default(),
    };
    server
        .store
        .finish_job(&claimed.lease, outcome)
        .await
        .unwrap();
    // A reconnect after "step 2" gets what follows, once, then the end.
    let body = http
        .get(&url)
        .header("X-API-Key", &server.key_a)
        .header("Last-Event-ID", second_step.to_string())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let events = sse_events(&body);
    let logs: Vec<&(Option<i64>, String, String)> =
        events.iter().filter(|(_, e, _)| e == "log").collect();
    assert!(logs[0].2.contains("step 3"), "{body}");
    let ids: Vec<i64> = logs.iter().map(|(id, _, _)| id.unwrap()).collect();
    assert!(ids.iter().all(|i| *i > second_step) && ids.windows(2).all(|w| w[0] < w[1]));
    let rest = all.iter().filter(|e| e.seq > second_step).count();
    assert_eq!(ids.len(), rest + 1, "the rest and the completion entry");
    let (_, last, status) = events.last().unwrap();
    assert_eq!((last.as_str(), status.as_str()), ("end", "completed"));
    // Another organization's key sees no such job (the same 404 as for any unknown one).
    let (status, _) = server
        .call(
            Method::GET,
            &format!("{JOBS}/{id}/logs/stream"),
            Some(&server.key_b),
            None,
        )
        .await;
    assert_eq!(status, 404);
}
