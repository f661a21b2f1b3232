//! Shared by the CLI tests: an in-process server (127.0.0.1:0), optionally with an in-process worker that
//! has no trainer, and the `dn` binary run against it.

#![allow(dead_code)]
pub mod cluster;
pub mod hub;

use std::path::Path;
use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use dn_testkit::server::{ApiOptions, ApiServer};
use dn_worker::{UnavailableTrainer, Worker, WorkerConfig};

/// The in-process API, with a worker beside it when asked for.
pub struct Env {
    pub api: ApiServer,
}

impl std::ops::Deref for Env {
    type Target = ApiServer;
    fn deref(&self) -> &ApiServer {
        &self.api
    }
}

pub async fn start(with_worker: bool) -> Env {
    start_with(None, with_worker).await
}

/// A server whose catalog holds `model` (default: a tiny config-only model directory).
pub async fn start_with(model: Option<String>, with_worker: bool) -> Env {
    start_with_catalog(model, false, with_worker).await
}

/// [`start_with`], jobs restricted to the catalog when `catalog_only`.
pub async fn start_with_catalog(
    model: Option<String>,
    catalog_only: bool,
    with_worker: bool,
) -> Env {
    let api = ApiServer::start(ApiOptions {
        model,
        catalog_only,
        max_upload_bytes: 1 << 20,
        ..ApiOptions::default()
    })
    .await;
    if with_worker {
        let mut config = WorkerConfig::new("test-worker");
        config.poll_interval = Duration::from_millis(50);
        let worker = Worker::new(api.store.clone(), Arc::new(UnavailableTrainer), config);
        tokio::spawn(worker.run(api.stopped()));
    }
    Env { api }
}

impl Env {
    /// [`ApiServer::data_dir`] as a command-line argument.
    pub fn data_dir_arg(&self) -> String {
        self.data_dir().to_string_lossy().into_owned()
    }

    /// Runs `dn ARGS` with a clean environment plus `envs`.
    pub async fn dn(&self, args: &[&str], envs: &[(&str, &str)]) -> Output {
        let mut command = dn_command(self.dir.path(), args);
        for (k, v) in envs {
            command.env(k, v);
        }
        tokio::time::timeout(Duration::from_secs(60), command.output())
            .await
            .expect("dn finished within 60 s")
            .unwrap()
    }

    /// A new API key of `org` and the environment that connects the CLI with it (workspace `main`).
    pub async fn member(&self, org: &str) -> Vec<(&'static str, String)> {
        let key = self
            .ok(
                &[
                    "keys",
                    "create",
                    "--org",
                    org,
                    "--data-dir",
                    &self.data_dir_arg(),
                ],
                &[],
            )
            .await;
        vec![
            ("DN_SERVER", self.url.clone()),
            ("DN_API_KEY", key.trim().to_owned()),
            ("DN_ORGANIZATION", org.to_owned()),
            ("DN_WORKSPACE", "main".to_owned()),
        ]
    }

    pub async fn ok(&self, args: &[&str], envs: &[(&str, &str)]) -> String {
        succeeded(args, self.dn(args, envs).await)
    }
}

/// The stdout of a `dn` run that must have succeeded (its output in the panic otherwise).
pub fn succeeded(args: &[&str], out: Output) -> String {
    assert!(
        out.status.success(),
        "dn {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A path under the repository's `examples/` (the quickstart's capability and datasets).
pub fn examples(path: &str) -> String {
    format!("{}/../../examples/{path}", env!("CARGO_MANIFEST_DIR"))
}

/// `dn ARGS` with a clean environment: only PATH, and HOME and the CLI's config dir under `home`.
pub fn dn_command(home: &Path, args: &[&str]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_dn"));
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("DN_CONFIG_DIR", home.join("config"))
        .stdin(std::process::Stdio::null());
    command
}

pub fn write(root: &Path, path: &str, text: &str) {
    let full = root.join(path);
    std::fs::create_dir_all(full.parent().unwrap()).unwrap();
    std::fs::write(full, text).unwrap();
}

/// The test model (scripts/fetch-test-model.sh); `None` skips, unless the test script requires it.
pub use dn_testkit::test_model_name as test_model;
