//! Registries: content-addressed immutable versions, name and path checks, upload limits, the system prompt.

mod common;

use common::*;
use dn_client::PushFile;
use reqwest::Method;

#[tokio::test]
async fn versions_are_immutable_and_content_addressed() {
    let server = start().await;
    let client = server.client(&server.key_a);
    let first = client
        .push_dataset("acme", dataset_files("demos", "0.1.0", ROWS))
        .await
        .unwrap();
    assert!(first.created);
    assert!(first.manifest.digest.starts_with("sha256:"));
    assert_eq!(first.manifest.data_files, vec!["train.jsonl"]);
    let again = client
        .push_dataset("acme", dataset_files("demos", "0.1.0", ROWS))
        .await
        .unwrap();
    assert!(!again.created, "same content again is a no-op");
    assert_eq!(again.manifest.digest, first.manifest.digest);
    let err = client
        .push_dataset(
            "acme",
            dataset_files(
                "demos",
                "0.1.0",
                "{\"prompt\":\"a\",\"completion\":\"b\"}\n",
            ),
        )
        .await
        .unwrap_err();
    assert_eq!(err.status().map(|s| s.as_u16()), Some(409));
    assert!(
        err.to_string()
            .contains("acme/demos@0.1.0 already exists with different content"),
        "{err}"
    );
    // A new version is fine, and the old one is unchanged.
    client
        .push_dataset(
            "acme",
            dataset_files(
                "demos",
                "0.2.0",
                "{\"prompt\":\"a\",\"completion\":\"b\"}\n",
            ),
        )
        .await
        .unwrap();
    let listed = client.list_datasets("acme").await.unwrap();
    let versions: Vec<&str> = listed.items.iter().map(|d| d.version.as_str()).collect();
    assert_eq!(versions, vec!["0.1.0", "0.2.0"]);
    let (status, bytes) = raw_get(
        &server,
        "/api/v1/org/acme/datasets/demos/0.1.0/files/train.jsonl",
    )
    .await;
    assert_eq!((status, bytes.as_str()), (200, ROWS));
    assert_eq!(
        client
            .get_dataset("acme", "demos", "0.1.0")
            .await
            .unwrap()
            .digest,
        first.manifest.digest
    );
}

async fn raw_get(server: &TestServer, path: &str) -> (u16, String) {
    let response = reqwest::Client::new()
        .get(format!("{}{path}", server.url))
        .header("X-API-Key", &server.key_a)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test]
async fn capabilities_yield_the_entry_agent_prompt() {
    let server = start().await;
    let client = server.client(&server.key_a);
    let pushed = client
        .push_capability(
            "acme",
            capability_files("1.0.0", "  You are a support agent.  "),
        )
        .await
        .unwrap();
    assert_eq!(pushed.manifest.system_prompt, "You are a support agent.");
    assert_eq!(pushed.manifest.prompt_agent.as_deref(), Some("support"));
    // Without entry_agent: the alphabetically first top-level agent.
    let files = files(&[
        (
            "capability.yaml",
            "schema: 1\nname: helper\nversion: 0.1.0\ndescription: Helps\n",
        ),
        ("agents/zed.md", "Zed prompt"),
        ("agents/alpha.md", "---\ntitle: a\n---\nAlpha prompt\n"),
        ("agents/nested/aaa.md", "not top level"),
    ]);
    let helper = client.push_capability("acme", files).await.unwrap();
    assert_eq!(helper.manifest.system_prompt, "Alpha prompt");
    assert_eq!(
        client.list_capabilities("acme").await.unwrap().items.len(),
        2
    );
    let shown = client
        .get_capability("acme", "helper", "0.1.0")
        .await
        .unwrap();
    assert_eq!(shown.digest, helper.manifest.digest);
}

#[tokio::test]
async fn bad_uploads_are_refused_with_the_file_named() {
    let server = start().await;
    let client = server.client(&server.key_a);
    let cases: Vec<(Vec<PushFile>, u16, &str)> = vec![
        (
            files(&[("train.jsonl", ROWS)]),
            422,
            "dataset.yaml: missing from the upload",
        ),
        (
            dataset_files("Bad_Name", "0.1.0", ROWS),
            422,
            "dataset.yaml: name 'Bad_Name'",
        ),
        (
            dataset_files("ok", "latest", ROWS),
            422,
            "dataset.yaml: version 'latest'",
        ),
        (dataset_files("ok", "1.0", ROWS), 422, "semantic version"),
        (
            files(&[
                ("dataset.yaml", "name: ok\nversion: 1.0.0\nformat: xlsx\n"),
                ("a.xlsx", "x"),
            ]),
            422,
            "format 'xlsx'",
        ),
        (
            files(&[(
                "dataset.yaml",
                "name: ok\nversion: 1.0.0\nformat: jsonl\nfiles: [missing.jsonl]\n",
            )]),
            422,
            "missing.jsonl",
        ),
        (
            files(&[
                ("dataset.yaml", "name: ok\nversion: 1.0.0\nformat: jsonl\n"),
                ("../escape.jsonl", ROWS),
            ]),
            422,
            "unsafe file path",
        ),
        (
            files(&[
                ("dataset.yaml", "name: ok\nversion: 1.0.0\nformat: jsonl\n"),
                ("/etc/passwd", ROWS),
            ]),
            422,
            "unsafe file path",
        ),
        (
            files(&[("dataset.yaml", ": not yaml : ["), ("a.jsonl", ROWS)]),
            422,
            "dataset.yaml: invalid YAML",
        ),
    ];
    for (upload, status, needle) in cases {
        let err = client.push_dataset("acme", upload).await.unwrap_err();
        assert_eq!(err.status().map(|s| s.as_u16()), Some(status), "{err}");
        assert!(
            err.to_string().contains(needle),
            "{err} should mention {needle:?}"
        );
    }
    let capability_cases: Vec<(Vec<PushFile>, &str)> = vec![
        (
            files(&[(
                "capability.yaml",
                "schema: 2\nname: a\nversion: 1.0.0\ndescription: d\n",
            )]),
            "schema must be 1",
        ),
        (
            files(&[(
                "capability.yaml",
                "schema: 1\nname: a\nversion: 1.0.0\ndescription: ''\n",
            )]),
            "description must not be empty",
        ),
        (
            files(&[(
                "capability.yaml",
                "schema: 1\nname: a\nversion: 1.0.0\ndescription: d\nentry_agent: ghost\n",
            )]),
            "entry_agent 'ghost'",
        ),
        (
            files(&[
                (
                    "capability.yaml",
                    "schema: 1\nname: a\nversion: 1.0.0\ndescription: d\n",
                ),
                ("agents/x.md", "---\n: [\n---\nbody"),
            ]),
            "agents/x.md: invalid front matter",
        ),
    ];
    for (upload, needle) in capability_cases {
        let err = client.push_capability("acme", upload).await.unwrap_err();
        assert_eq!(err.status().map(|s| s.as_u16()), Some(422), "{err}");
        assert!(
            err.to_string().contains(needle),
            "{err} should mention {needle:?}"
        );
    }
    // Names in routes are checked before they reach storage.
    for path in [
        "/api/v1/org/acme/datasets/..%2F..%2Fetc/1.0.0",
        "/api/v1/org/acme/datasets/ok/1.0.0/files/..%2F..%2Fdn.db",
        "/api/v1/org/acme/capabilities/UPPER/1.0.0",
    ] {
        let (status, _) = raw_get(&server, path).await;
        assert_eq!(status, 422, "{path}");
    }
}

#[tokio::test]
async fn uploads_over_the_limit_get_a_clear_413() {
    let server = start_with_limit(1000).await;
    let client = server.client(&server.key_a);
    let big = "x".repeat(2000);
    let err = client
        .push_dataset("acme", dataset_files("big", "1.0.0", &big))
        .await
        .unwrap_err();
    assert_eq!(err.status().map(|s| s.as_u16()), Some(413));
    assert!(
        err.to_string().contains("limit of 1000 bytes")
            || err.to_string().contains("limit is 1000 bytes"),
        "{err}"
    );
    // Far over the limit: refused by the body limit, still with the same clear message.
    let huge = "x".repeat(3 << 20);
    let err = client
        .push_dataset("acme", dataset_files("big", "1.0.0", &huge))
        .await
        .unwrap_err();
    assert_eq!(err.status().map(|s| s.as_u16()), Some(413), "{err}");
    assert!(err.to_string().contains("1000 bytes"), "{err}");
    let (status, _) = server
        .call(
            Method::GET,
            "/api/v1/org/acme/datasets/big/1.0.0",
            Some(&server.key_a),
            None,
        )
        .await;
    assert_eq!(status, 404, "nothing half-written");
}

/// A data file larger than the server's in-memory threshold: the client streams it from disk, the server
/// spools it to a temporary file while hashing it, storage receives it as a multipart upload, and the
/// download streams it back byte for byte.
#[tokio::test]
async fn large_data_files_stream_from_disk_through_a_spool_into_storage() {
    use sha2::{Digest, Sha256};
    let server = start_with_limit(64 << 20).await;
    let client = server.client(&server.key_a);
    let dir = tempfile::tempdir().unwrap();
    let row =
        "{\"prompt\":\"What is the status of my order?\",\"completion\":\"It shipped today.\"}\n";
    let rows = row.repeat((dn_registry::SPOOL_ABOVE + (2 << 20)) / row.len());
    let data = dir.path().join("train.jsonl");
    std::fs::write(&data, &rows).unwrap();
    let yaml = "name: large\nversion: 1.0.0\nformat: jsonl\nfiles:\n  - train.jsonl\n";
    let pushed = client
        .push_dataset(
            "acme",
            vec![
                PushFile::bytes("dataset.yaml", yaml),
                PushFile::file("train.jsonl", &data),
            ],
        )
        .await
        .unwrap();
    let entry = pushed
        .manifest
        .files
        .iter()
        .find(|f| f.path == "train.jsonl")
        .unwrap();
    assert!(entry.size as usize > dn_registry::SPOOL_ABOVE);
    assert_eq!(entry.size as usize, rows.len());
    assert_eq!(
        entry.sha256,
        format!("sha256:{}", hex_lower(&Sha256::digest(rows.as_bytes())))
    );
    let downloaded = client
        .dataset_file("acme", "large", "1.0.0", "train.jsonl")
        .await
        .unwrap();
    assert!(downloaded == rows.as_bytes(), "the file came back changed");
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
