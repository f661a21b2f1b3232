//! The API while its dependencies are away: `/health` (liveness) keeps answering, `/health/ready` says
//! which dependency fails, and requests that need the database or storage answer 503 with Retry-After at
//! once instead of hanging or answering 500.

mod common;

use std::time::{Duration, Instant};

use reqwest::Method;

async fn get(url: &str, key: Option<&str>) -> reqwest::Response {
    let mut request = reqwest::Client::new().get(url);
    if let Some(key) = key {
        request = request.header("X-API-Key", key);
    }
    request.send().await.unwrap()
}

fn retry_after(response: &reqwest::Response) -> Option<&str> {
    response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap())
}

#[tokio::test]
async fn readiness_names_the_storage_that_fails_and_registry_calls_answer_503() {
    let server = common::start().await;
    common::push_fixtures(&server.client(&server.key_a), "acme").await;
    let (status, body) = server.call(Method::GET, "/health/ready", None, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["checks"]["database"], "ok");
    assert_eq!(body["checks"]["storage"], "ok");
    // The storage directory replaced by a file: every read of it fails.
    let root = server.storage_dir();
    std::fs::rename(&root, server.data_dir().join("storage.away")).unwrap();
    std::fs::write(&root, b"not a directory").unwrap();
    let ready = get(&format!("{}/api/v1/health/ready", server.url), None).await;
    assert_eq!(ready.status(), 503);
    assert_eq!(retry_after(&ready), Some("5"));
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["status"], "unavailable");
    assert_eq!(body["checks"]["database"], "ok");
    assert_ne!(body["checks"]["storage"], "ok", "{body}");
    let file = format!("{}/org/acme/datasets/support-demos/0.1.0", server.url);
    let refused = get(&file, Some(&server.key_a)).await;
    assert_eq!(refused.status(), 503);
    assert_eq!(retry_after(&refused), Some("5"));
    // Back again.
    std::fs::remove_file(&root).unwrap();
    std::fs::rename(server.data_dir().join("storage.away"), &root).unwrap();
    let (status, _) = server.call(Method::GET, "/health/ready", None, None).await;
    assert_eq!(status, 200);
    assert_eq!(get(&file, Some(&server.key_a)).await.status(), 200);
}

#[tokio::test]
async fn with_the_database_gone_requests_answer_503_at_once_and_liveness_still_200() {
    let server = common::start().await;
    server.store.close().await;
    let started = Instant::now();
    let (status, body) = server.call(Method::GET, "/health", None, None).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));
    let (status, body) = server.call(Method::GET, "/health/live", None, None).await;
    assert_eq!(status, 200, "{body}");
    let ready = get(&format!("{}/api/v1/health/ready", server.url), None).await;
    assert_eq!(ready.status(), 503);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_ne!(body["checks"]["database"], "ok", "{body}");
    let jobs = format!("{}/api/v1/org/acme/ws/main/training/jobs", server.url);
    let refused = get(&jobs, Some(&server.key_a)).await;
    assert_eq!(refused.status(), 503);
    assert_eq!(retry_after(&refused), Some("5"));
    let body: serde_json::Value = refused.json().await.unwrap();
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("the job store is unavailable"),
        "{body}"
    );
    assert!(started.elapsed() < Duration::from_secs(30), "no hanging");
}

/// A client that timed out and sent its create again with the same Idempotency-Key gets the first job, not
/// a second one; the same key for another request is a 409; a malformed key a 422 naming the header.
#[tokio::test]
async fn a_create_retried_with_its_idempotency_key_makes_one_job() {
    let server = common::start().await;
    common::push_fixtures(&server.client(&server.key_a), "acme").await;
    let jobs = format!("{}/api/v1/org/acme/ws/main/training/jobs", server.url);
    let create = |key: &str, body: serde_json::Value| {
        reqwest::Client::new()
            .post(&jobs)
            .header("X-API-Key", &server.key_a)
            .header("Idempotency-Key", key)
            .json(&body)
            .send()
    };
    let body = common::docs_request(&server.model);
    let first = create("8d0c7d2e-create-1", body.clone()).await.unwrap();
    assert_eq!(first.status(), 200);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first: serde_json::Value = first.json().await.unwrap();
    let again = create("8d0c7d2e-create-1", body.clone()).await.unwrap();
    assert_eq!(again.status(), 200);
    assert_eq!(
        again
            .headers()
            .get("idempotent-replayed")
            .map(|v| v.to_str().unwrap()),
        Some("true")
    );
    let again: serde_json::Value = again.json().await.unwrap();
    assert_eq!(again["id"], first["id"]);
    let mut changed = body.clone();
    changed["config"]["steps"] = 7.into();
    let conflict = create("8d0c7d2e-create-1", changed).await.unwrap();
    assert_eq!(conflict.status(), 409);
    let bad = create("has spaces", body.clone()).await.unwrap();
    assert_eq!(bad.status(), 422);
    let detail: serde_json::Value = bad.json().await.unwrap();
    assert!(
        detail["detail"]
            .as_str()
            .unwrap()
            .contains("Idempotency-Key")
    );
    // Without a key (the reference SDK), every create is a new job.
    let (status, plain) = server.create_docs_job().await;
    assert_eq!(status, 200);
    assert_ne!(plain["id"], first["id"]);
    let (_, list) = server
        .call(
            Method::GET,
            "/api/v1/org/acme/ws/main/training/jobs",
            Some(&server.key_a),
            None,
        )
        .await;
    assert_eq!(list["total"], 2, "{list}");
}

/// A job failed by an attempt that recorded no artifacts (or by the reaper) still lists the checkpoints
/// earlier attempts committed.
#[tokio::test]
async fn a_failed_job_keeps_its_committed_checkpoints_in_its_artifacts() {
    use dn_store::JobOutcome;
    use dn_store::prelude::*;
    let server = common::start().await;
    common::push_fixtures(&server.client(&server.key_a), "acme").await;
    let (_, job) = server.create_docs_job().await;
    let id = job["id"].as_str().unwrap().to_owned();
    let registry = dn_registry::Registry::new(
        &dn_registry::StorageConfig::Local {
            root: server.storage_dir(),
        },
        1 << 20,
    )
    .unwrap();
    let files = server.dir.path().join("ckpt");
    std::fs::create_dir_all(&files).unwrap();
    std::fs::write(files.join("adapter_config.json"), b"{}").unwrap();
    registry
        .upload_checkpoint_files("acme", &id, "step-000002", &files)
        .await
        .unwrap();
    registry
        .commit_checkpoint("acme", &id, "step-000002")
        .await
        .unwrap();
    // Uploaded but never committed: not listed.
    registry
        .upload_checkpoint_files("acme", &id, "step-000004", &files)
        .await
        .unwrap();
    let claimed = server
        .store
        .claim_job("w1", Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    let outcome = JobOutcome::Failed {
        error: "cannot read the checkpoints of the job: storage error".into(),
        metrics: Default::default(),
        artifacts: Default::default(),
    };
    server
        .store
        .finish_job(&claimed.lease, outcome)
        .await
        .unwrap();
    let path = format!("/api/v1/org/acme/ws/main/training/jobs/{id}/artifacts");
    let (status, body) = server
        .call(Method::GET, &path, Some(&server.key_a), None)
        .await;
    assert_eq!(status, 200, "{body}");
    let checkpoints = body["artifacts"]["checkpoints"].as_array().unwrap();
    assert_eq!(checkpoints.len(), 1, "{body}");
    assert_eq!(checkpoints[0]["name"], "step-000002");
    assert_eq!(checkpoints[0]["step"], 2);
}
