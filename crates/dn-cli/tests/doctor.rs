//! `dn doctor` on this machine (no GPU; a build without CUDA): the device a worker would pick and why, the
//! host, the data dir and the hub cache, as text and JSON; a device that cannot be used exits 1.

use std::process::{Command, Output};

use serde_json::Value;

fn doctor(args: &[&str], hub: &std::path::Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dn"))
        .args(args)
        .env("HF_HUB_CACHE", hub)
        .env_remove("DN_DEVICE")
        .env_remove("DN_CONFIG")
        .output()
        .expect("dn runs")
}

#[test]
fn doctor_reports_the_device_host_data_dir_and_hub_cache() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let hub = dir.path().join("hub");
    std::fs::create_dir_all(&hub).unwrap();
    let data_arg = data.to_str().unwrap();

    let out = doctor(&["--json", "doctor", "--data-dir", data_arg], &hub);
    assert!(out.status.success(), "{out:?}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["device"]["spec"], "auto");
    assert_eq!(report["device"]["device"], "cpu");
    assert!(
        report["device"]["why"]
            .as_str()
            .unwrap()
            .contains("built without CUDA"),
        "{report}"
    );
    assert_eq!(report["device"]["warning"], Value::Null);
    assert_eq!(report["cuda"]["built_with_cuda"], false);
    assert!(report["device"]["free_bytes"].as_u64().unwrap() > 0);
    assert!(report["host"]["cores"].as_u64().unwrap() >= 1);
    assert!(
        report["host"]["memory_total_bytes"].as_u64().unwrap()
            >= report["host"]["memory_available_bytes"].as_u64().unwrap()
    );
    assert_eq!(report["data_dir"]["path"], data_arg);
    assert_eq!(report["data_dir"]["exists"], false);
    assert!(report["data_dir"]["disk_free_bytes"].as_u64().unwrap() > 0);
    assert_eq!(report["hub_cache"]["path"], hub.to_str().unwrap());
    assert_eq!(report["hub_cache"]["models"], 0);

    let text = doctor(&["doctor", "--data-dir", data_arg], &hub);
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(
        text.starts_with("device      auto -> cpu, ") && text.contains("data dir    "),
        "{text}"
    );

    let refused = doctor(
        &["doctor", "--device", "cuda", "--data-dir", data_arg],
        &hub,
    );
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    let text = String::from_utf8(refused.stdout).unwrap();
    assert!(
        text.starts_with("device      cuda:0: this dn was built without CUDA"),
        "{text}"
    );
}
