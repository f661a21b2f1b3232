//! What careless or hostile input must not do through the CLI: push files from outside the pushed
//! directory, keep using a key that was revoked or has expired, or run a worker out of memory with a
//! chat template.

mod common;

use common::{start, succeeded, write};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_take_only_regular_files_inside_the_directory() {
    let env = start(false).await;
    let member = env.member("acme").await;
    let envs: Vec<(&str, &str)> = member.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let root = env.dir.path();
    write(
        root,
        "cap/capability.yaml",
        "schema: 1\nname: linked\nversion: 1.0.0\ndescription: Linked\n",
    );
    std::os::unix::fs::symlink("/etc/passwd", root.join("cap/agents.md")).unwrap();
    std::fs::create_dir_all(root.join("cap/agents")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", root.join("cap/agents/support.md")).unwrap();
    let cap = root.join("cap").to_string_lossy().into_owned();
    let out = env.dn(&["capability", "push", &cap], &envs).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("is a symbolic link") && stderr.contains("/cap/agents"),
        "{stderr}"
    );
    // Nothing reached the server.
    let listed = succeeded(
        &["capability", "list"],
        env.dn(&["--json", "capability", "list"], &envs).await,
    );
    assert!(!listed.contains("linked"), "{listed}");

    write(
        root,
        "data/dataset.yaml",
        "name: d\nversion: 1.0.0\nformat: jsonl\n",
    );
    std::os::unix::fs::symlink("/etc/passwd", root.join("data/rows.jsonl")).unwrap();
    let data = root.join("data").to_string_lossy().into_owned();
    let out = env.dn(&["dataset", "push", &data], &envs).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("rows.jsonl is a symbolic link"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_listed_revoked_and_expire() {
    use std::os::unix::fs::PermissionsExt;
    let env = start(false).await;
    let data_dir = env.data_dir_arg();
    let mode = |p: &str| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data_dir), 0o700);
    assert_eq!(mode(&format!("{data_dir}/dn.db")), 0o600);

    let member = env.member("acme").await;
    let envs: Vec<(&str, &str)> = member.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let key = member
        .iter()
        .find(|(k, _)| *k == "DN_API_KEY")
        .unwrap()
        .1
        .clone();
    succeeded(
        &["dataset", "list"],
        env.dn(&["dataset", "list"], &envs).await,
    );

    let listed = env
        .ok(
            &[
                "--json",
                "keys",
                "list",
                "--org",
                "acme",
                "--data-dir",
                &data_dir,
            ],
            &[],
        )
        .await;
    assert!(!listed.contains(&key[7..]), "never the secret: {listed}");
    let keys: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(keys[0]["prefix"], &key[..7]);
    assert!(keys[0]["last_used_at"].is_string(), "{keys}");
    let id = keys[0]["id"].as_str().unwrap();
    let out = env
        .ok(&["keys", "revoke", id, "--data-dir", &data_dir], &[])
        .await;
    assert!(out.starts_with(&format!("revoked {id}")), "{out}");
    let out = env.dn(&["dataset", "list"], &envs).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("401"), "{stderr}");
    let out = env
        .dn(
            &[
                "keys",
                "revoke",
                "ffffffffffffffff",
                "--data-dir",
                &data_dir,
            ],
            &[],
        )
        .await;
    assert!(!out.status.success());

    // A key that expires.
    let short = env
        .ok(
            &[
                "keys",
                "create",
                "--org",
                "acme",
                "--expires-in",
                "1s",
                "--data-dir",
                &data_dir,
            ],
            &[],
        )
        .await;
    let mut envs = envs.clone();
    envs.retain(|(k, _)| *k != "DN_API_KEY");
    envs.push(("DN_API_KEY", short.trim()));
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let out = env.dn(&["dataset", "list"], &envs).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));

    // A key header that is not ASCII is an invalid key, not a missing one.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(env.url.trim_start_matches("http://"))
        .await
        .unwrap();
    stream
        .write_all(b"GET /api/v1/org/acme/datasets HTTP/1.1\r\nhost: x\r\nx-api-key: dn_\xc3\xa9\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stream.read_to_end(&mut response),
    )
    .await
    .unwrap()
    .unwrap();
    let response = String::from_utf8_lossy(&response);
    assert!(
        response.starts_with("HTTP/1.1 401") && response.contains("invalid API key"),
        "{response}"
    );
}

/// The llama fixture with `template` (`dir/model`) and a dataset of one row whose user message is `boom`
/// (`dir/doubling`).
fn fixture_with_template(template: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/families/llama/model");
    let model = dir.path().join("model");
    std::fs::create_dir_all(&model).unwrap();
    for entry in std::fs::read_dir(&fixture).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, model.join(path.file_name().unwrap())).unwrap();
    }
    write(&model, "chat_template.jinja", template);
    let dataset = dir.path().join("doubling");
    write(
        &dataset,
        "dataset.yaml",
        "name: doubling\nversion: 0.1.0\nformat: jsonl\n",
    );
    write(
        &dataset,
        "train.jsonl",
        "{\"messages\":[{\"role\":\"user\",\"content\":\"boom\"},{\"role\":\"assistant\",\"content\":\"a\"}]}\n",
    );
    dir
}

/// Runs `dn` with `args` (`HOME` in `dir`) and 256 MiB for data preparation: its exit code and output.
fn dn_with_limit(dir: &std::path::Path, args: &[std::ffi::OsString]) -> (Option<i32>, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dn"))
        .args(args)
        .env("HOME", dir)
        .env("DN_PREPARE_MEMORY_MB", "256")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

fn os_args(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Vec<std::ffi::OsString> {
    args.iter().map(|a| a.as_ref().to_owned()).collect()
}

/// `dn train sft --local` on the llama fixture with `template`, one row whose user message is `boom`, and
/// 256 MiB for data preparation: its exit code and output.
fn local_job_with_template(template: &str) -> (Option<i32>, String) {
    let dir = fixture_with_template(template);
    let capability = common::examples("capabilities/support-agent");
    let args = os_args(&[
        &"train",
        &"sft",
        &"--local",
        &"--data-dir",
        &dir.path().join("data"),
        &"--model",
        &dir.path().join("model"),
        &"--capability",
        &capability,
        &"--dataset",
        &dir.path().join("doubling"),
        &"--steps",
        &"1",
        &"--poll-interval-sec",
        &"0.2",
        &"--timeout-sec",
        &"120",
    ]);
    dn_with_limit(dir.path(), &args)
}

/// 40 doublings of a string (1 TiB) when `condition` holds, then a plain template.
fn doubling(condition: &str) -> String {
    format!(
        "{{% if {condition} %}}{{% set ns = namespace(s='x') %}}\
         {{% for i in range(40) %}}{{% set ns.s = ns.s ~ ns.s %}}{{% endfor %}}\
         {{{{ ns.s | length }}}}{{% endif %}}\
         {{% for m in messages %}}<{{{{ m.role }}}}>{{{{ m.content }}}}{{% endfor %}}\
         {{% if add_generation_prompt %}}<assistant>{{% endif %}}"
    )
}

const LIMIT_MESSAGE: &str = "ran past the data-preparation memory limit of 256 MiB (worker setting \
                             prepare_memory_mb, DN_PREPARE_MEMORY_MB)";

/// `dn data preview` renders in the same memory-limited child as jobs: the runaway row fails the
/// preview with the row named, and the CLI process is not taken down.
#[test]
fn a_template_that_doubles_a_string_fails_the_preview_naming_the_row() {
    let dir = fixture_with_template(&doubling(
        "messages | selectattr('content', 'equalto', 'boom') | list | length > 0",
    ));
    let rows = dir.path().join("doubling/train.jsonl");
    let started = std::time::Instant::now();
    let args = os_args(&[
        &"data",
        &"preview",
        &"--model",
        &dir.path().join("model"),
        &"--file",
        &rows,
    ]);
    let (code, text) = dn_with_limit(dir.path(), &args);
    assert_eq!(code, Some(1), "{text}");
    let expected = format!(
        "{}: row 1: rendering it with the chat template {LIMIT_MESSAGE}",
        rows.display()
    );
    assert!(text.contains(&expected), "{text}");
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
}

/// A chat template that doubles a string in a loop would take the node's memory in seconds; a job's
/// data (and the template's load probes) are prepared in a child process under `DN_PREPARE_MEMORY_MB`,
/// so the job fails at once, naming the row (or the probes) and the setting.
#[test]
fn a_template_that_doubles_a_string_fails_the_job_naming_the_row() {
    let limit = LIMIT_MESSAGE;
    for (condition, expected) in [
        (
            "messages | selectattr('content', 'equalto', 'boom') | list | length > 0",
            format!(
                "doubling@0.1.0/train.jsonl: row 1: rendering it with the chat template {limit}"
            ),
        ),
        (
            "true",
            format!(
                "loading the model's chat template (rendering its probe conversations) {limit}"
            ),
        ),
    ] {
        let started = std::time::Instant::now();
        let (code, text) = local_job_with_template(&doubling(condition));
        assert_ne!(code, Some(0), "{text}");
        assert!(text.contains(&expected), "{condition}: {text}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "{:?}",
            started.elapsed()
        );
    }
}
