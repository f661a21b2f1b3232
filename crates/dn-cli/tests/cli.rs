//! The `dn` binary against an in-process server (127.0.0.1:0) with an in-process worker that has no
//! trainer: every command, connection resolution, exit codes.

mod common;

use common::{start, write};
use serde_json::Value;

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
                &env.data_dir_arg(),
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
        "--seed",
        "7",
        "--lr-scheduler",
        "cosine",
        "--warmup-steps",
        "2",
        "--eval-interval",
        "5",
        "--lora-target-modules",
        "q_proj,v_proj",
        "--max-grad-norm",
        "0.5",
        "--weight-decay",
        "0.01",
        "--gradient-checkpointing",
        "true",
        "--save-total-limit",
        "3",
        "--tokens-per-pass",
        "2048",
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
    assert_eq!(
        (
            &c["seed"],
            &c["lr_scheduler"],
            &c["warmup_steps"],
            &c["eval_interval"]
        ),
        (&7.into(), &"cosine".into(), &2.into(), &5.into())
    );
    assert_eq!(
        c["lora_target_modules"],
        serde_json::json!(["q_proj", "v_proj"])
    );
    assert_eq!(
        (
            &c["max_grad_norm"],
            &c["weight_decay"],
            &c["gradient_checkpointing"]
        ),
        (&0.5.into(), &0.01.into(), &true.into())
    );
    assert_eq!(c["save_total_limit"], 3);
    assert_eq!(c["tokens_per_pass"], 2048);

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

    // Following the logs of the failed job prints every entry once, then ends non-zero.
    let out = env.dn(&["train", "logs", &id, "--follow"], &conn).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert_eq!(
        stdout.matches("job failed: trainer not available").count(),
        1,
        "{stdout}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("{id} failed")));

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
                &env.data_dir_arg(),
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
