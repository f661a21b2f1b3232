//! An in-process `dn` server on 127.0.0.1:0 with two organizations (`acme`, `rival`), a tiny catalog, and
//! fixture datasets and capabilities.

#![allow(dead_code)]

use std::path::Path;

use dn_client::{PushContent, PushFile};
use dn_server::ServerLimits;
use dn_store::prelude::*;
use dn_testkit::server::{ApiOptions, ApiServer};
use reqwest::Method;
use serde_json::Value;

/// The in-process API with keys of two organizations.
pub struct TestServer {
    pub api: ApiServer,
    pub key_a: String,
    pub key_b: String,
}

impl std::ops::Deref for TestServer {
    type Target = ApiServer;
    fn deref(&self) -> &ApiServer {
        &self.api
    }
}

pub async fn start_with_limit(max_upload_bytes: u64) -> TestServer {
    start_with_limits(max_upload_bytes, ServerLimits::default()).await
}

/// A server with these connection and request limits.
pub async fn start_with_limits(max_upload_bytes: u64, limits: ServerLimits) -> TestServer {
    let api = ApiServer::start(ApiOptions {
        max_upload_bytes,
        limits,
        ..ApiOptions::default()
    })
    .await;
    let key_a = api.store.create_api_key("acme").await.unwrap();
    let key_b = api.store.create_api_key("rival").await.unwrap();
    TestServer { api, key_a, key_b }
}

pub async fn start() -> TestServer {
    start_with_limit(10 << 20).await
}

impl TestServer {
    pub fn client(&self, key: &str) -> dn_client::Client {
        dn_client::Client::new(&self.url, Some(key)).unwrap()
    }

    /// A raw request: (status, JSON body or Null).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = reqwest::Client::new().request(method, format!("{}{path}", self.url));
        if let Some(key) = key {
            request = request.header("X-API-Key", key);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Posts the docs example job in acme/main as acme's member; the status and the answer.
    pub async fn create_docs_job(&self) -> (u16, Value) {
        let jobs = "/api/v1/org/acme/ws/main/training/jobs";
        let body = docs_request(&self.model);
        self.call(Method::POST, jobs, Some(&self.key_a), Some(body))
            .await
    }
}

pub fn files(pairs: &[(&str, &str)]) -> Vec<PushFile> {
    pairs
        .iter()
        .map(|(path, text)| PushFile::bytes(*path, text.as_bytes()))
        .collect()
}

pub fn capability_files(version: &str, prompt: &str) -> Vec<PushFile> {
    files(&[
        (
            "capability.yaml",
            &format!(
                "schema: 1\nname: support-agent\nversion: {version}\ndescription: Answers support tickets\nentry_agent: support\n"
            ),
        ),
        (
            "agents/support.md",
            &format!("---\nname: support\nmodel: inherit\n---\n\n{prompt}\n"),
        ),
        (
            "agents/another.md",
            "---\nname: another\n---\nNot the entry agent.\n",
        ),
    ])
}

pub fn dataset_files(name: &str, version: &str, rows: &str) -> Vec<PushFile> {
    files(&[
        (
            "dataset.yaml",
            &format!("name: {name}\nversion: {version}\nformat: jsonl\n"),
        ),
        ("train.jsonl", rows),
    ])
}

pub const ROWS: &str = "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"},{\"role\":\"assistant\",\"content\":\"hello\"}]}\n";

/// Pushes the docs' example artifacts into `org`: support-agent@1.0.0, support-demos@0.1.0, support-eval@0.1.0.
pub async fn push_fixtures(client: &dn_client::Client, org: &str) {
    client
        .push_capability(org, capability_files("1.0.0", "You are a support agent."))
        .await
        .unwrap();
    client
        .push_dataset(org, dataset_files("support-demos", "0.1.0", ROWS))
        .await
        .unwrap();
    client
        .push_dataset(org, dataset_files("support-eval", "0.1.0", ROWS))
        .await
        .unwrap();
}

/// The docs' example as the reference SDK sends it (`model_dump(mode="json", exclude_none=True)`).
pub fn docs_request(model: &str) -> Value {
    serde_json::json!({
        "model": model,
        "capability_ref": {"name": "support-agent", "version": "1.0.0"},
        "tags": [],
        "backend": "tinker",
        "trainer_type": "sft",
        "config": {
            "dataset_ref": {"name": "support-demos", "version": "0.1.0"},
            "trajectory_dataset_refs": [],
            "eval_dataset_ref": {"name": "support-eval", "version": "0.1.0"},
            "batch_size": 8, "learning_rate": 0.0001, "steps": 100, "lora_rank": 16
        }
    })
}

pub fn write_tree(root: &Path, files: &[PushFile]) {
    for file in files {
        let path = root.join(&file.path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let PushContent::Bytes(bytes) = &file.content else {
            panic!("{}: the test trees are built from bytes", file.path);
        };
        std::fs::write(path, bytes).unwrap();
    }
}
