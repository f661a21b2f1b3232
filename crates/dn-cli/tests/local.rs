//! `dn train sft --local`: one process, embedded store, real training on the test model, with the
//! repository's example capability and datasets given as directories.

mod common;

use std::process::Command;
use std::time::Duration;

use common::examples;

#[test]
fn a_local_job_trains_and_leaves_a_peft_adapter() {
    let Some(model) = common::test_model() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (capability, demos, trajectories, eval) = (
        examples("capabilities/support-agent"),
        examples("datasets/support-demos"),
        examples("datasets/support-trajectories"),
        examples("datasets/support-eval"),
    );
    let run = |eval_samples: &str| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_dn"))
            .args([
                "train",
                "sft",
                "--local",
                "--data-dir",
                data.to_str().unwrap(),
                "--model",
                &model,
                "--capability",
                &capability,
                "--dataset",
                &demos,
                "--trajectory-dataset",
                &trajectories,
                "--eval-dataset",
                &eval,
                "--steps",
                "2",
                "--batch-size",
                "2",
                "--max-sequence-length",
                "256",
                "--lora-rank",
                "4",
                "--eval-samples",
                eval_samples,
                "--poll-interval-sec",
                "0.2",
                "--timeout-sec",
                "300",
            ])
            .env("HOME", dir.path())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        for _ in 0..600 {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        let _ = child.kill();
        child.wait_with_output().unwrap()
    };
    let out = run("1");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("capability default/support-agent@1.0.0 from"),
        "{stderr}"
    );
    assert!(stderr.contains("step 1/2: loss"), "{stderr}");
    assert!(stderr.contains("step 2/2: loss"), "{stderr}");
    assert!(stderr.contains("eval after step 0: loss"), "{stderr}");
    assert!(stderr.contains("training finished: 2 step(s)"), "{stderr}");
    // The eval conversations completed by the trained model, beside their reference answers.
    assert!(
        stderr.contains("eval samples after step 2: 1 generated"),
        "{stderr}"
    );
    for field in ["prompt:", "reference:", "generated:"] {
        assert!(stderr.contains(field), "{stderr}");
    }
    assert!(stdout.contains(" completed "), "{stdout}");
    let jobs = data.join("storage/jobs/default");
    let job = std::fs::read_dir(&jobs)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let adapter = job.join("checkpoints/final");
    assert!(adapter.join("adapter_model.safetensors").is_file());
    assert!(adapter.join("adapter_config.json").is_file());

    // `dn train sample` renders the eval conversation as training did: its greedy completion begins as
    // the eval sample the job logged (32 tokens of it, to keep the test short).
    let job_id = job.file_name().unwrap().to_str().unwrap().to_owned();
    let first_eval = dir.path().join("first-eval.jsonl");
    let eval_file = std::fs::read_to_string(format!("{eval}/eval.jsonl")).unwrap();
    std::fs::write(&first_eval, eval_file.lines().next().unwrap()).unwrap();
    let sampled = Command::new(env!("CARGO_BIN_EXE_dn"))
        .args(["train", "sample", &job_id, "--local", "--data-dir"])
        .arg(&data)
        .arg("--messages")
        .arg(&first_eval)
        .args(["--json", "--max-tokens", "32"])
        .env("HOME", dir.path())
        .output()
        .unwrap();
    let sampled_out = String::from_utf8_lossy(&sampled.stdout);
    assert!(
        sampled.status.success(),
        "{sampled_out}{}",
        String::from_utf8_lossy(&sampled.stderr)
    );
    let sample: serde_json::Value = serde_json::from_str(sampled_out.trim()).unwrap();
    let completion: String = sample["completion"]
        .as_str()
        .unwrap()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    assert!(completion.chars().count() > 40, "{completion}");
    let logged = stderr
        .lines()
        .find_map(|l| l.trim().strip_prefix("generated: "))
        .unwrap();
    let head: String = completion.chars().take(40).collect();
    assert!(logged.starts_with(&head), "{completion:?} vs {logged:?}");
    assert!(!sample["reference"].as_str().unwrap().is_empty());

    // The same data dir again: the pushes are no-ops and the kept key still works.
    let again = run("0");
    assert_eq!(
        again.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
}
