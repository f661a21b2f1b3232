//! `dn worker` checks its device when it starts: a node that cannot train where it was told to exits at
//! once with the reason, instead of claiming jobs and failing each of them.

mod common;

use std::time::Duration;

#[tokio::test]
async fn a_worker_with_an_unusable_device_exits_at_once_saying_why() {
    let home = tempfile::tempdir().unwrap();
    let data_dir = home.path().join("data");
    let data_dir = data_dir.to_str().unwrap();
    let mut cases = vec![("gpu", "expected cpu, cuda, cuda:N or auto")];
    if !cfg!(feature = "cuda") {
        cases.push(("cuda:0", "built without CUDA"));
    } else if !std::path::Path::new("/dev/nvidia0").exists() {
        cases.push(("cuda:0", "no usable CUDA GPU"));
    }
    for (device, expected) in cases {
        let args = ["worker", "--data-dir", data_dir, "--device", device];
        let run = common::dn_command(home.path(), &args).output();
        let out = tokio::time::timeout(Duration::from_secs(60), run)
            .await
            .expect("the worker exited on its own")
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "--device {device} was accepted");
        // A spelling no device has is refused by the flag's parser, one no GPU answers by the check.
        assert!(
            stderr.contains("--device") && stderr.contains(device) && stderr.contains(expected),
            "--device {device}: {stderr}"
        );
    }
}
