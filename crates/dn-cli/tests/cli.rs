//! The `dn` binary against an in-process server (127.0.0.1:0) with an in-process worker that has no
//! trainer: every command, connection resolution, exit codes.

use std::path::Path;
use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use dn_registry::{Registry, StorageConfig};
use dn_server::{AppState, Catalog};
use dn_store::SqlStore;
use dn_types::SftDefaults;
use dn_worker::{UnavailableTrainer, Worker, WorkerConfig};
use serde_json::Value;
use tokio::sync::watch;

struct Env {
    url: String,
    dir: tempfile::TempDir,
    model: String,
    _stop: watch::Sender<bool>,
}

async fn start(with_worker: bool) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let model_dir = dir.path().join("tiny");
    std::fs::create_dir_all(&model_dir).unwrap();
    std::fs::write(
        model_dir.join("config.json"),
        r#"{"model_type":"llama","hidden_size":64,"intermediate_size":128,"num_hidden_layers":2,
            "num_attention_heads":4,"vocab_size":256,"max_position_embeddings":512}"#,
    )
    .unwrap();
    let model = model_dir.to_string_lossy().into_owned();
    let data = dir.path().join("data");
    let store = Arc::new(SqlStore::open_data_dir(&data).await.unwrap());
    let registry = Registry::new(
        &StorageConfig::Local {
            root: data.join("storage"),
        },
        1 << 20,
    )
    .unwrap();
    let state = AppState {
        store: store.clone(),
        registry,
        catalog: Arc::new(Catalog::load(std::slice::from_ref(&model)).unwrap()),
        defaults: SftDefaults::default(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = watch::channel(false);
    let mut server_stop = stopped.clone();
    tokio::spawn(dn_server::serve(listener, state, async move {
        let _ = server_stop.changed().await;
    }));
    if with_worker {
        let mut config = WorkerConfig::new("test-worker");
        config.poll_interval = Duration::from_millis(50);
        tokio::spawn(Worker::new(store, Arc::new(UnavailableTrainer), config).run(stopped));
    }
    Env {
        url,
        dir,
        model,
        _stop: stop,
    }
}

impl Env {
    fn data_dir(&self) -> String {
        self.dir.path().join("data").to_string_lossy().into_owned()
    }

    /// Runs `dn ARGS` with a clean environment plus `envs`.
    async fn dn(&self, args: &[&str], envs: &[(&str, &str)]) -> Output {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_dn"));
        command
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("DN_CONFIG_DIR", self.dir.path().join("config"))
            .stdin(std::process::Stdio::null());
        for (k, v) in envs {
            command.env(k, v);
        }
        tokio::time::timeout(Duration::from_secs(60), command.output())
            .await
            .expect("dn finished within 60 s")
            .unwrap()
    }

    async fn ok(&self, args: &[&str], envs: &[(&str, &str)]) -> String {
        let out = self.dn(args, envs).await;
        assert!(
            out.status.success(),
            "dn {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

fn write(root: &Path, path: &str, text: &str) {
    let full = root.join(path);
    std::fs::create_dir_all(full.parent().unwrap()).unwrap();
    std::fs::write(full, text).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_round_trips() {
    let env = start(true).await;
    let key = env
        .ok(
            &[
                "keys",
                "create",
                "--org",
                "acme",
                "--data-dir",
                &env.data_dir(),
            ],
            &[],
        )
        .await;
    let key = key.trim().to_owned();
    assert!(
        key.starts_with("dn_") && !key.contains(' '),
        "the key alone on stdout: {key:?}"
    );
    let conn = [
        ("DN_SERVER", env.url.as_str()),
        ("DN_API_KEY", key.as_str()),
        ("DN_ORGANIZATION", "acme"),
        ("DN_WORKSPACE", "main"),
    ];

    let root = env.dir.path();
    write(
        root,
        "cap/capability.yaml",
        "schema: 1\nname: support-agent\nversion: 1.0.0\ndescription: Support\n",
    );
    write(
        root,
        "cap/agents/support.md",
        "---\nname: support\n---\nYou are a support agent.\n",
    );
    write(
        root,
        "demos.jsonl",
        "{\"prompt\":\"hi\",\"completion\":\"hello\"}\n",
    );
    write(
        root,
        "evalset/dataset.yaml",
        "name: support-eval\nversion: 0.1.0\nformat: jsonl\n",
    );
    write(
        root,
        "evalset/eval.jsonl",
        "{\"prompt\":\"a\",\"completion\":\"b\"}\n",
    );
    let cap = root.join("cap").to_string_lossy().into_owned();
    let out = env.ok(&["capability", "push", &cap], &conn).await;
    assert!(
        out.starts_with("pushed capability acme/support-agent@1.0.0 sha256:"),
        "{out}"
    );
    let out = env.ok(&["capability", "push", &cap], &conn).await;
    assert!(
        out.contains("already exists with the same content"),
        "{out}"
    );
    let demos = root.join("demos.jsonl").to_string_lossy().into_owned();
    env.ok(
        &[
            "dataset",
            "push",
            &demos,
            "--name",
            "support-demos",
            "--version",
            "0.1.0",
        ],
        &conn,
    )
    .await;
    env.ok(
        &["dataset", "push", &root.join("evalset").to_string_lossy()],
        &conn,
    )
    .await;
    let listed: Value =
        serde_json::from_str(&env.ok(&["dataset", "list", "--json"], &conn).await).unwrap();
    assert_eq!(listed["items"].as_array().unwrap().len(), 2);
    let shown: Value = serde_json::from_str(
        &env.ok(&["dataset", "show", "support-demos@0.1.0"], &conn)
            .await,
    )
    .unwrap();
    assert_eq!(shown["data_files"], serde_json::json!(["demos.jsonl"]));
    let caps = env.ok(&["capability", "list"], &conn).await;
    assert!(
        caps.starts_with("support-agent@1.0.0 Support sha256:"),
        "{caps}"
    );

    // Submit with every flag; the job carries them.
    let sft = [
        "train",
        "sft",
        "--model",
        env.model.as_str(),
        "--capability",
        "support-agent@1.0.0",
        "--dataset",
        "support-demos@0.1.0",
        "--trajectory-dataset",
        "support-demos@0.1.0",
        "--eval-dataset",
        "support-eval@0.1.0",
        "--name",
        "first",
        "--project-ref",
        "proj",
        "--run-ref",
        "run-1",
        "--tag",
        "a",
        "--tag",
        "b",
        "--max-sequence-length",
        "512",
        "--batch-size",
        "8",
        "--gradient-accumulation-steps",
        "2",
        "--steps",
        "100",
        "--epochs",
        "3",
        "--lora-rank",
        "8",
        "--lora-alpha",
        "16",
        "--checkpoint-interval",
        "5",
        "--learning-rate",
        "0.0002",
        "--json",
    ];
    let job: Value = serde_json::from_str(&env.ok(&sft, &conn).await).unwrap();
    let id = job["id"].as_str().unwrap().to_owned();
    assert_eq!(
        (
            job["name"].as_str(),
            job["project_ref"].as_str(),
            job["run_ref"].as_str()
        ),
        (Some("first"), Some("proj"), Some("run-1"))
    );
    assert_eq!(job["tags"], serde_json::json!(["a", "b"]));
    let c = &job["config"];
    assert_eq!(
        (
            c["max_sequence_length"].as_i64(),
            c["batch_size"].as_i64(),
            c["gradient_accumulation_steps"].as_i64()
        ),
        (Some(512), Some(8), Some(2))
    );
    assert_eq!(
        (
            c["steps"].as_i64(),
            c["epochs"].as_i64(),
            c["lora_rank"].as_i64(),
            c["lora_alpha"].as_i64()
        ),
        (Some(100), Some(3), Some(8), Some(16))
    );
    assert_eq!(
        (
            c["checkpoint_interval"].as_i64(),
            c["learning_rate"].as_f64()
        ),
        (Some(5), Some(0.0002))
    );
    assert_eq!(c["trajectory_dataset_refs"][0]["name"], "support-demos");

    // The worker has no trainer: the job fails honestly, and wait exits non-zero.
    let out = env
        .dn(
            &[
                "train",
                "wait",
                &id,
                "--poll-interval-sec",
                "0.1",
                "--timeout-sec",
                "30",
            ],
            &conn,
        )
        .await;
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with(&format!("{id} failed first")));
    assert!(String::from_utf8_lossy(&out.stderr).contains("trainer not available"));

    let list = env.ok(&["train", "list"], &conn).await;
    assert_eq!(list.trim(), format!("{id} failed first"));
    let got = env.ok(&["train", "get", &id], &conn).await;
    assert!(got.contains("error: trainer not available"), "{got}");
    let logs = env.ok(&["train", "logs", &id], &conn).await;
    assert!(
        logs.contains("job queued") && logs.contains("job failed: trainer not available"),
        "{logs}"
    );
    let artifacts: Value =
        serde_json::from_str(&env.ok(&["train", "artifacts", &id], &conn).await).unwrap();
    assert!(artifacts["artifacts"].is_object());
    let retried = env.ok(&["train", "retry", &id], &conn).await;
    assert!(retried.starts_with(&format!("{id} queued")), "{retried}");
    let catalog: Value =
        serde_json::from_str(&env.ok(&["train", "catalog", "--json"], &conn).await).unwrap();
    assert_eq!(catalog["models"][0]["tinker_id"], env.model.as_str());

    // sft --wait also exits non-zero unless completed.
    let mut waiting: Vec<&str> = sft[..sft.len() - 1].to_vec();
    waiting.extend(["--wait", "--poll-interval-sec", "0.1"]);
    let out = env.dn(&waiting, &conn).await;
    assert_eq!(out.status.code(), Some(1));

    // cancel needs --yes without a terminal.
    let out = env.dn(&["train", "cancel", &id], &conn).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--yes"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_comes_from_flags_env_then_profile() {
    let env = start(false).await;
    let key = env
        .ok(
            &[
                "keys",
                "create",
                "--org",
                "acme",
                "--data-dir",
                &env.data_dir(),
            ],
            &[],
        )
        .await;
    let key = key.trim();
    // The reference's DREADNODE_* names work.
    let reference = [
        ("DREADNODE_SERVER", env.url.as_str()),
        ("DREADNODE_API_KEY", key),
        ("DREADNODE_ORGANIZATION", "acme"),
        ("DREADNODE_WORKSPACE", "main"),
    ];
    env.ok(&["train", "list"], &reference).await;
    // A profile file, used when neither flags nor env say otherwise.
    write(
        env.dir.path(),
        "config/profiles.toml",
        &format!(
            "default = \"local\"\n[profiles.local]\nserver = \"{}\"\napi_key = \"{key}\"\norganization = \"acme\"\nworkspace = \"main\"\n",
            env.url
        ),
    );
    env.ok(&["train", "list"], &[]).await;
    // Flags win over env, env over the profile.
    let out = env
        .dn(
            &["train", "list", "--api-key", "dn_wrong"],
            &[("DN_API_KEY", key)],
        )
        .await;
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid API key"));
    let out = env
        .dn(&["train", "list"], &[("DN_API_KEY", "dn_wrong")])
        .await;
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid API key"));
    let out = env
        .dn(&["train", "list", "--profile", "missing"], &[])
        .await;
    assert!(String::from_utf8_lossy(&out.stderr).contains("no profile 'missing'"));

    // No worker: wait times out with exit code 2.
    let root = env.dir.path();
    write(
        root,
        "cap/capability.yaml",
        "schema: 1\nname: agent\nversion: 1.0.0\ndescription: d\n",
    );
    write(root, "d.jsonl", "{\"prompt\":\"q\",\"completion\":\"a\"}\n");
    env.ok(
        &["capability", "push", &root.join("cap").to_string_lossy()],
        &[],
    )
    .await;
    env.ok(
        &[
            "dataset",
            "push",
            &root.join("d.jsonl").to_string_lossy(),
            "--name",
            "d",
            "--version",
            "1.0.0",
        ],
        &[],
    )
    .await;
    let out = env
        .dn(
            &[
                "train",
                "sft",
                "--model",
                &env.model,
                "--capability",
                "agent@1.0.0",
                "--dataset",
                "d@1.0.0",
                "--wait",
                "--poll-interval-sec",
                "0.1",
                "--timeout-sec",
                "0.5",
            ],
            &[],
        )
        .await;
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Refs need a version; errors name the flag.
    let out = env
        .dn(
            &[
                "train",
                "sft",
                "--model",
                &env.model,
                "--capability",
                "agent",
                "--dataset",
                "d@1.0.0",
            ],
            &[],
        )
        .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--capability"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = env
        .dn(
            &[
                "train",
                "sft",
                "--model",
                &env.model,
                "--capability",
                "agent@latest",
                "--dataset",
                "d@1.0.0",
            ],
            &[],
        )
        .await;
    assert!(String::from_utf8_lossy(&out.stderr).contains("'latest' is not allowed"));
    let out = env
        .dn(
            &[
                "train",
                "sft",
                "--model",
                &env.model,
                "--capability",
                "agent@1.0.0",
            ],
            &[],
        )
        .await;
    assert!(String::from_utf8_lossy(&out.stderr).contains("require dataset_ref"));
}

/// The test model (scripts/fetch-test-model.sh); `None` skips, unless the test script requires it.
fn test_model() -> Option<String> {
    let path = std::env::var("DN_TEST_MODEL_GGUF").unwrap_or_else(|_| {
        format!(
            "{}/../../.cache/models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf",
            env!("CARGO_MANIFEST_DIR")
        )
    });
    if Path::new(&path).is_file() {
        return Some(path);
    }
    assert!(
        std::env::var("DN_REQUIRE_TEST_MODEL").as_deref() != Ok("1"),
        "{path} is missing"
    );
    eprintln!("skipping: {path} not found");
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_preview_from_a_file_and_from_the_registry() {
    let Some(model) = test_model() else { return };
    let env = start(false).await;
    let root = env.dir.path();
    write(
        root,
        "rows.jsonl",
        "{\"prompt\":\"Hi\",\"completion\":\"Hello!\"}\n{\"bad\":1}\n{\"messages\":[{\"role\":\"user\",\"content\":\"2+2?\"},{\"role\":\"assistant\",\"content\":\"4\"}]}\n",
    );
    write(root, "prompt.txt", "Be brief.\n");
    let rows = root.join("rows.jsonl").to_string_lossy().into_owned();
    let prompt = root.join("prompt.txt").to_string_lossy().into_owned();

    // --file needs no server.
    let out = env
        .dn(
            &[
                "data",
                "preview",
                "--model",
                &model,
                "--file",
                &rows,
                "--system-prompt-file",
                &prompt,
            ],
            &[],
        )
        .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("<|im_start|>system\nBe brief.<|im_end|>"),
        "{text}"
    );
    assert!(
        text.contains("⟦Hello!<|im_end|>⟧") && text.contains("⟦4<|im_end|>⟧"),
        "{text}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("rows.jsonl: row 2: matches no row shape"),
        "{stderr}"
    );
    assert!(
        stderr.contains("rows 3 (skipped 1)") && stderr.contains("2 example(s)"),
        "{stderr}"
    );

    let out = env
        .ok(
            &[
                "data",
                "preview",
                "--model",
                &model,
                "--file",
                &rows,
                "--json",
                "--max-sequence-length",
                "8",
            ],
            &[],
        )
        .await;
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    for line in &lines {
        assert_eq!(line["num_tokens"], 8);
        assert_eq!(line["truncated"], true);
        assert_eq!(
            line["input_ids"].as_array().unwrap().len(),
            line["loss_mask"].as_array().unwrap().len()
        );
        // The end is kept: ... <|im_end|> (supervised) then the template's newline (not).
        let mask = line["loss_mask"].as_array().unwrap();
        assert_eq!(
            mask[mask.len() - 2..],
            [serde_json::json!(1), serde_json::json!(0)]
        );
    }

    // From the registry, with the capability's prompt.
    let key = env
        .ok(
            &[
                "keys",
                "create",
                "--org",
                "acme",
                "--data-dir",
                &env.data_dir(),
            ],
            &[],
        )
        .await;
    let conn = [
        ("DN_SERVER", env.url.as_str()),
        ("DN_API_KEY", key.trim()),
        ("DN_ORGANIZATION", "acme"),
    ];
    write(
        root,
        "cap/capability.yaml",
        "schema: 1\nname: agent\nversion: 1.0.0\ndescription: d\n",
    );
    write(
        root,
        "cap/agents/a.md",
        "---\nname: a\n---\nYou are the agent.\n",
    );
    env.ok(
        &["capability", "push", &root.join("cap").to_string_lossy()],
        &conn,
    )
    .await;
    env.ok(
        &[
            "dataset",
            "push",
            &rows,
            "--name",
            "rows",
            "--version",
            "1.0.0",
        ],
        &conn,
    )
    .await;
    let out = env
        .ok(
            &[
                "data",
                "preview",
                "--model",
                &model,
                "--dataset",
                "rows@1.0.0",
                "--capability",
                "agent@1.0.0",
                "--limit",
                "1",
            ],
            &conn,
        )
        .await;
    assert!(
        out.contains("<|im_start|>system\nYou are the agent.<|im_end|>"),
        "{out}"
    );
    assert_eq!(out.matches("<|im_start|>user").count(), 1, "--limit 1");
}

/// Every documented row shape (examples/shapes, one file each) previews to one example.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_shape_previews() {
    let Some(model) = test_model() else { return };
    let env = start(false).await;
    let shapes = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/shapes");
    let mut files: Vec<_> = std::fs::read_dir(&shapes)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 6);
    for file in files {
        let out = env
            .dn(
                &[
                    "data",
                    "preview",
                    "--model",
                    &model,
                    "--file",
                    &file.to_string_lossy(),
                ],
                &[],
            )
            .await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{}: {stderr}", file.display());
        assert!(
            stderr.contains("1 example(s)") && stderr.contains("skipped 0"),
            "{}: {stderr}",
            file.display()
        );
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("⟦"),
            "{}",
            file.display()
        );
    }
}
