//! `dn data preview` with the real test model: from a file (no server), from the registry, and on every
//! documented row shape.

mod common;

use std::path::Path;

use common::{start, test_model, write};

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
    let args = [
        "data",
        "preview",
        "--model",
        &model,
        "--file",
        &rows,
        "--system-prompt-file",
        &prompt,
    ];
    // A value an option does not take is an error naming the option, never the default in its place.
    let bad = env
        .dn(&[&args[..], &["--train-on", "bogus"]].concat(), &[])
        .await;
    assert_eq!(bad.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr
            .contains("train_on: unknown value \"bogus\" (one of assistant, last_assistant, all)"),
        "{stderr}"
    );
    let out = env.dn(&args, &[]).await;
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
    let member = env.member("acme").await;
    let conn: Vec<(&str, &str)> = member.iter().map(|(k, v)| (*k, v.as_str())).collect();
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
