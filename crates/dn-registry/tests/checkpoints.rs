//! Checkpoints in storage, on a local directory and on a real S3-compatible server (moto on loopback,
//! started by scripts/test.sh; without `DN_TEST_S3_ENDPOINT` that half is skipped unless
//! `DN_REQUIRE_S3=1`): a file larger than the upload buffer goes up as a multipart upload and comes back
//! byte for byte, by download or as a stream; only committed checkpoints are visible.

use std::path::Path;

use dn_registry::{COMMIT_MARKER, Error, Registry, StorageConfig};
use futures::TryStreamExt;
use object_store::PutPayload;
use object_store::path::Path as StorePath;

/// Larger than the 8 MiB upload buffer: three multipart parts.
const LARGE: usize = 20 << 20;

fn s3_config() -> Option<StorageConfig> {
    let server = dn_testkit::s3_server()?;
    Some(StorageConfig::S3 {
        bucket: server.bucket,
        endpoint: Some(server.endpoint),
        region: Some("us-east-1".into()),
        allow_http: true,
        credentials: None,
        retry_timeout: dn_registry::DEFAULT_S3_RETRY_TIMEOUT,
    })
}

fn large_bytes() -> Vec<u8> {
    // Not constant, so that a misplaced or repeated part would show.
    (0..LARGE)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3])
        .collect()
}

fn write_checkpoint(dir: &Path, large: &[u8]) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("adapter_model.safetensors"), large).unwrap();
    std::fs::write(dir.join("adapter_config.json"), br#"{"peft_type":"LORA"}"#).unwrap();
}

async fn round_trip(config: StorageConfig) {
    let registry = Registry::new(&config, 1 << 20).unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let org = format!("org-{}", uuid::Uuid::new_v4().simple());
    let job = "job-1";
    let large = large_bytes();
    write_checkpoint(&scratch.path().join("up"), &large);

    let uri = registry
        .put_checkpoint(&org, job, "step-000003", &scratch.path().join("up"))
        .await
        .unwrap();
    let key = format!("jobs/{org}/{job}/checkpoints/step-000003");
    // Local storage reports the key, relative to the storage root; S3 its s3:// URI.
    assert!(
        uri == key || uri.ends_with(&format!("/{key}")) && uri.starts_with("s3://"),
        "{uri}"
    );
    assert_eq!(
        registry.committed_checkpoints(&org, job).await.unwrap(),
        ["step-000003"]
    );

    let listed = registry
        .checkpoint_files(&org, job, "step-000003")
        .await
        .unwrap();
    let files: Vec<(&str, u64)> = listed
        .files
        .iter()
        .map(|f| (f.path.as_str(), f.size_bytes))
        .collect();
    assert_eq!(
        files,
        [
            ("adapter_config.json", 20),
            ("adapter_model.safetensors", LARGE as u64)
        ]
    );

    let (size, stream) = registry
        .checkpoint_file(&org, job, "step-000003", "adapter_model.safetensors")
        .await
        .unwrap();
    assert_eq!(size, LARGE as u64);
    let chunks: Vec<bytes::Bytes> = stream.try_collect().await.unwrap();
    assert!(chunks.len() > 1, "the file came back as a stream of chunks");
    assert!(chunks.concat() == large, "streamed bytes differ");

    let down = scratch.path().join("down");
    registry
        .get_checkpoint(&org, job, "step-000003", &down)
        .await
        .unwrap();
    assert!(std::fs::read(down.join("adapter_model.safetensors")).unwrap() == large);
    assert!(!down.join(COMMIT_MARKER).exists());

    // A checkpoint whose marker is missing (its upload was interrupted) does not exist for readers.
    let store = registry.object_store();
    let half = StorePath::from(format!(
        "{}/adapter_model.safetensors",
        Registry::checkpoint_prefix(&org, job, "step-000006")
    ));
    store
        .put(&half, PutPayload::from_static(b"x"))
        .await
        .unwrap();
    assert_eq!(
        registry.committed_checkpoints(&org, job).await.unwrap(),
        ["step-000003"]
    );
    for (name, file) in [
        ("step-000006", "adapter_model.safetensors"),
        ("step-000003", COMMIT_MARKER),
        ("step-000003", "missing.bin"),
        ("step-000003", "../step-000006/adapter_model.safetensors"),
        ("..", "adapter_model.safetensors"),
    ] {
        match registry.checkpoint_file(&org, job, name, file).await {
            Err(Error::CheckpointNotFound { .. }) => {}
            Err(e) => panic!("{name}/{file}: {e}"),
            Ok(_) => panic!("{name}/{file} was served"),
        }
    }
    let err = registry
        .checkpoint_files(&org, job, "step-000006")
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "checkpoint 'step-000006' of training job job-1 not found"
    );
}

#[tokio::test]
async fn checkpoints_stream_through_a_local_directory() {
    let dir = tempfile::tempdir().unwrap();
    round_trip(StorageConfig::Local {
        root: dir.path().join("storage"),
    })
    .await;
}

#[tokio::test]
async fn checkpoints_stream_through_s3() {
    if let Some(config) = s3_config() {
        round_trip(config).await;
    }
}
