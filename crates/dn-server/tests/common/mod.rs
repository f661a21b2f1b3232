//! An in-process `dn` server on 127.0.0.1:0 with two organizations (`acme`, `rival`), a tiny catalog, and
//! fixture datasets and capabilities.

#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;

use dn_client::{PushContent, PushFile};
use dn_registry::{Registry, StorageConfig};
use dn_server::{AppState, Catalog, ServerLimits};
use dn_store::SqlStore;
use dn_store::prelude::*;
use dn_types::SftDefaults;
use reqwest::Method;
use serde_json::Value;
use tokio::sync::oneshot;

pub struct TestServer {
    pub url: String,
    pub store: Arc<SqlStore>,
    pub key_a: String,
    pub key_b: String,
    pub model: String,
    pub dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub const TINY_CONFIG: &str = r#"{"model_type":"llama","hidden_size":64,"intermediate_size":128,
 "num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,"vocab_size":256,
 "max_position_embeddings":512,"tie_word_embeddings":true}"#;

pub async fn start_with_limit(max_upload_bytes: u64) -> TestServer {
    start_with_limits(max_upload_bytes, ServerLimits::default()).await
}

/// A server with these connection and request limits.
pub async fn start_with_limits(max_upload_bytes: u64, limits: ServerLimits) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let model_dir = dir.path().join("tiny-llama");
    std::fs::create_dir_all(&model_dir).unwrap();
    std::fs::write(model_dir.join("config.json"), TINY_CONFIG).unwrap();
    let model = model_dir.to_string_lossy().into_owned();

    let store = Arc::new(SqlStore::open_data_dir(dir.path()).await.unwrap());
    let key_a = store.create_api_key("acme").await.unwrap();
    let key_b = store.create_api_key("rival").await.unwrap();
    let registry = Registry::new(
        &StorageConfig::Local {
            root: dir.path().join("storage"),
        },
        max_upload_bytes,
    )
    .unwrap();
    let state = AppState {
        previewer: None,
        store: store.clone(),
        registry,
        catalog: Arc::new(Catalog::load(std::slice::from_ref(&model)).unwrap()),
        defaults: SftDefaults::default(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(dn_server::serve_with_limits(
        listener,
        state,
        limits,
        async move {
            let _ = stopped.await;
        },
    ));
    TestServer {
        url,
        store,
        key_a,
        key_b,
        model,
        dir,
        stop: Some(stop),
    }
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
