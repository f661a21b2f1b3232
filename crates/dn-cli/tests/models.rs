//! Models the way users name them: `dn model pull` and `dn model list` against a hub on loopback
//! (`HF_ENDPOINT`), a hub id trained with `dn train sft --local`, architectures refused before any weight
//! is requested, an unreachable hub or a gated model failing at once with what to do, and `catalog_only`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use common::hub::{FakeHub, Repos};
use common::{dn_command, examples};

fn family(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/families")
        .join(name)
        .join("model")
}

/// `dn ARGS` with a hub cache under `home` and `envs`, at most `limit`.
async fn dn(home: &Path, args: &[&str], envs: &[(&str, &str)], limit: Duration) -> Output {
    let mut command = dn_command(home, args);
    command.env("HF_HUB_CACHE", home.join("hub"));
    for (k, v) in envs {
        command.env(k, v);
    }
    command.kill_on_drop(true);
    tokio::time::timeout(limit, command.output())
        .await
        .unwrap_or_else(|_| panic!("dn {args:?} finished within {limit:?}"))
        .unwrap()
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn local_job<'a>(data: &'a str, model: &'a str, paths: &'a [String; 3]) -> Vec<&'a str> {
    vec![
        "train",
        "sft",
        "--local",
        "--data-dir",
        data,
        "--model",
        model,
        "--capability",
        &paths[0],
        "--dataset",
        &paths[1],
        "--eval-dataset",
        &paths[2],
        "--eval-samples",
        "0",
        "--steps",
        "2",
        "--batch-size",
        "2",
        "--max-sequence-length",
        "128",
        "--lora-rank",
        "4",
        "--poll-interval-sec",
        "0.2",
        "--timeout-sec",
        "300",
    ]
}

fn example_paths() -> [String; 3] {
    [
        examples("capabilities/support-agent"),
        examples("datasets/support-demos"),
        examples("datasets/support-eval"),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn hub_models_are_pulled_listed_and_trained_by_id() {
    let hub = FakeHub::start(
        Repos::default()
            .dir("acme/tiny-llama", &family("llama"))
            .dir("acme/tiny-qwen3", &family("qwen3")),
    );
    let home = tempfile::tempdir().unwrap();
    let envs = [("HF_ENDPOINT", hub.url.as_str())];
    let minute = Duration::from_secs(60);

    // Config first, then the tokenizer, template and every shard, each with its progress.
    let out = dn(
        home.path(),
        &["model", "pull", "acme/tiny-llama"],
        &envs,
        minute,
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let requests = hub.requests();
    assert!(
        requests[0].ends_with("/config.json"),
        "config.json first: {requests:?}"
    );
    for shard in 1..=3 {
        let file = format!("model-0000{shard}-of-00003.safetensors");
        assert!(
            stderr.contains(&format!("downloading {file} ("))
                && stderr.contains(&format!("{file}: ")),
            "{stderr}"
        );
    }
    assert!(
        stdout.starts_with("pulled in ") && stdout.contains("llama"),
        "{stdout}"
    );
    let snapshot = home
        .path()
        .join("hub/models--acme--tiny-llama/snapshots")
        .join(common::hub::COMMIT);
    for file in [
        "chat_template.jinja",
        "generation_config.json",
        "model.safetensors.index.json",
    ] {
        assert_eq!(
            std::fs::read(snapshot.join(file)).unwrap(),
            std::fs::read(family("llama").join(file)).unwrap(),
            "{file}"
        );
    }

    // Pulled already: no request at all.
    let before = hub.requests().len();
    let out = dn(
        home.path(),
        &["model", "pull", "acme/tiny-llama"],
        &envs,
        minute,
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.starts_with("up to date in "), "{stdout}");
    assert_eq!(hub.requests().len(), before, "{:?}", hub.requests());

    // Listed with its family, size and trainability, from the files alone.
    let out = dn(home.path(), &["model", "list"], &[], minute).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let line = stdout
        .lines()
        .find(|l| l.starts_with("acme/tiny-llama "))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(line.contains(" llama ") && line.ends_with("yes"), "{line}");
    let out = dn(home.path(), &["--json", "model", "list"], &[], minute).await;
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let entry = &listed.as_array().unwrap()[0];
    assert_eq!(entry["id"], "acme/tiny-llama");
    assert_eq!(entry["family"], "llama");
    assert_eq!(entry["source"], "hub-cache");
    assert_eq!(entry["trainable"], true);
    let on_disk: u64 = std::fs::read_dir(family("llama"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert_eq!(entry["size_bytes"].as_u64(), Some(on_disk));
    assert!(entry["parameters"].as_u64().unwrap() > 10_000);

    // A job names a hub id it never pulled: the worker fetches it and trains it.
    let data = home.path().join("data").to_string_lossy().into_owned();
    let paths = example_paths();
    let job = local_job(&data, "acme/tiny-qwen3", &paths);
    let out = dn(home.path(), &job, &envs, Duration::from_secs(300)).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stderr.contains("step 2/2: loss"), "{stderr}");
    assert!(
        hub.requests()
            .contains(&"/acme/tiny-qwen3/resolve/main/model.safetensors".to_owned())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn unsupported_architectures_are_refused_before_any_weights_are_requested() {
    let mixtral =
        br#"{"model_type":"deepseek_v3","hidden_size":8,"intermediate_size":8,"num_hidden_layers":1,
        "num_attention_heads":2,"vocab_size":10,"num_local_experts":4}"#;
    // Llama-3.1-70B's shape: 280 GB of f32 weights, more than any test machine has.
    let llama_70b = br#"{"model_type":"llama","hidden_size":8192,"intermediate_size":28672,
        "num_hidden_layers":80,"num_attention_heads":64,"num_key_value_heads":8,"vocab_size":128256,
        "max_position_embeddings":131072,"tie_word_embeddings":false}"#;
    let hub = FakeHub::start(
        Repos::default()
            .dir("acme/tiny-moe", &family("llama"))
            .file("acme/tiny-moe", "config.json", mixtral)
            .dir("acme/huge", &family("llama"))
            .file("acme/huge", "config.json", llama_70b),
    );
    let home = tempfile::tempdir().unwrap();
    let envs = [("HF_ENDPOINT", hub.url.as_str())];
    let out = dn(
        home.path(),
        &["model", "pull", "acme/tiny-moe"],
        &envs,
        Duration::from_secs(60),
    )
    .await;
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains("acme/tiny-moe")
            && stderr.contains("deepseek_v3")
            && stderr.contains("mixture-of-experts"),
        "{stderr}"
    );
    // A job on it fails the same way, from the config alone.
    let data = home.path().join("data").to_string_lossy().into_owned();
    let paths = example_paths();
    let out = dn(
        home.path(),
        &local_job(&data, "acme/tiny-moe", &paths),
        &envs,
        Duration::from_secs(120),
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert_ne!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stderr.contains("mixtral"), "{stdout}\n{stderr}");
    // A job too big for this node's memory.
    let job = local_job(&data, "acme/huge", &paths);
    let out = dn(home.path(), &job, &envs, Duration::from_secs(120)).await;
    let (stdout, stderr) = text(&out);
    assert_ne!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("memory: this job needs about") && stderr.contains("batch_size"),
        "{stdout}\n{stderr}"
    );
    let requests = hub.requests();
    assert!(
        !requests.iter().any(|r| r.contains(".safetensors")),
        "no weight file requested: {requests:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_hubs_and_gated_models_fail_at_once_saying_what_to_do() {
    let home = tempfile::tempdir().unwrap();
    let cache = home.path().join("hub").display().to_string();
    // The probe's own timeout is 15 s; a loaded machine starting a debug binary needs room beside it.
    let limit = Duration::from_secs(60);
    // Nothing listens on this port.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    // This one accepts connections and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_url = format!("http://{}", silent.local_addr().unwrap());
    for endpoint in [&closed, &silent_url] {
        let started = Instant::now();
        let envs = [("HF_ENDPOINT", endpoint.as_str())];
        let out = dn(
            home.path(),
            &["model", "pull", "acme/offline"],
            &envs,
            limit,
        )
        .await;
        let (_, stderr) = text(&out);
        assert!(!out.status.success());
        assert!(started.elapsed() < limit);
        for needle in [
            endpoint.as_str(),
            "acme/offline",
            &cache,
            "HF_TOKEN",
            "cannot be reached",
        ] {
            assert!(stderr.contains(needle), "{needle}: {stderr}");
        }
    }
    // A job on a hub id fails the same way, at once.
    let data = home.path().join("data").to_string_lossy().into_owned();
    let paths = example_paths();
    let started = Instant::now();
    let envs = [("HF_ENDPOINT", closed.as_str())];
    let out = dn(
        home.path(),
        &local_job(&data, "acme/offline", &paths),
        &envs,
        limit,
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert_ne!(out.status.code(), Some(0));
    assert!(started.elapsed() < limit);
    assert!(
        stderr.contains("cannot be reached") && stderr.contains("acme/offline"),
        "{stdout}\n{stderr}"
    );

    // A gated model: refused without a token, pulled with one.
    let hub = FakeHub::start(
        Repos::default()
            .dir("acme/gated", &family("qwen3"))
            .gated("acme/gated")
            .dir("acme/no-weights", &family("qwen3"))
            .file("acme/no-weights", "model.safetensors", b""),
    );
    let envs = [("HF_ENDPOINT", hub.url.as_str())];
    let out = dn(home.path(), &["model", "pull", "acme/gated"], &envs, limit).await;
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    for needle in ["acme/gated", "gated", "HF_TOKEN", hub.url.as_str(), &cache] {
        assert!(stderr.contains(needle), "{needle}: {stderr}");
    }
    let with_token = [("HF_ENDPOINT", hub.url.as_str()), ("HF_TOKEN", "hf_test")];
    let out = dn(
        home.path(),
        &["model", "pull", "acme/gated"],
        &with_token,
        limit,
    )
    .await;
    assert!(out.status.success(), "{}", text(&out).1);
    drop(silent);
}

#[tokio::test(flavor = "multi_thread")]
async fn catalog_only_deployments_refuse_other_hub_ids() {
    let open = common::start(false).await;
    let member = open.member("acme").await;
    let envs: Vec<(&str, &str)> = member.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let job = [
        "train",
        "sft",
        "--model",
        "acme/uncatalogued",
        "--capability",
        "agent@1.0.0",
        "--dataset",
        "d@1.0.0",
    ];
    // Any hub id passes the model check (this fails later, on the dataset nobody pushed).
    let out = open.dn(&job, &envs).await;
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        !stderr.contains("model:") && stderr.contains("d@1.0.0 not found"),
        "{stderr}"
    );

    let closed = common::start_with_catalog(None, true, false).await;
    let member = closed.member("acme").await;
    let envs: Vec<(&str, &str)> = member.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let out = closed.dn(&job, &envs).await;
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains("acme/uncatalogued")
            && stderr.contains("catalog_only")
            && stderr.contains("422"),
        "{stderr}"
    );
}
