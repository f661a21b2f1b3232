//! A hub id that is not cached yet is downloaded, weights included for training, from the hub named by
//! `HF_ENDPOINT`: here a minimal hub on loopback that answers like huggingface.co's `resolve` route
//! (etag, commit and range headers). A second resolve is served from the cache without a request.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use dn_render::{resolve_model_for_training, resolve_model_path};

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// Serves `files` under `/{repo}/resolve/main/`; records every requested path.
fn fake_hub(files: HashMap<String, Vec<u8>>) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let requests = Arc::new(Mutex::new(Vec::new()));
    let seen = requests.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            // `Range: bytes=START-[END]`.
            let mut range: (usize, Option<usize>) = (0, None);
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(spec) = line.to_ascii_lowercase().strip_prefix("range: bytes=") {
                    let (start, end) = spec.trim().split_once('-').unwrap();
                    range = (start.parse().unwrap(), end.parse().ok());
                }
            }
            let path = request_line.split(' ').nth(1).unwrap_or("").to_owned();
            seen.lock().unwrap().push(path.clone());
            let response = match files.get(&path) {
                Some(body) => {
                    let end = range.1.map_or(body.len(), |e| (e + 1).min(body.len()));
                    let start = range.0.min(end);
                    let part = &body[start..end];
                    let mut head = format!(
                        "HTTP/1.1 206 Partial Content\r\netag: \"{:x}\"\r\nx-repo-commit: {COMMIT}\r\n\
                         content-range: bytes {start}-{}/{}\r\ncontent-length: {}\r\n\
                         connection: close\r\n\r\n",
                        body.len() * 31 + path.len(),
                        end.saturating_sub(1),
                        body.len(),
                        part.len()
                    )
                    .into_bytes();
                    head.extend_from_slice(part);
                    head
                }
                None => b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                    .to_vec(),
            };
            let _ = stream.write_all(&response);
        }
    });
    (url, requests)
}

fn served(repo: &str, files: &[(&str, &[u8])]) -> HashMap<String, Vec<u8>> {
    files
        .iter()
        .map(|(name, body)| (format!("/{repo}/resolve/main/{name}"), body.to_vec()))
        .collect()
}

#[test]
fn uncached_hub_models_are_downloaded_with_their_weights_for_training() {
    let shard_1 = vec![1u8; 5000];
    let shard_2 = vec![2u8; 3000];
    let index = br#"{"metadata": {}, "weight_map": {"a": "model-00001-of-00002.safetensors",
        "b": "model-00002-of-00002.safetensors", "c": "model-00001-of-00002.safetensors"}}"#;
    let mut files = served(
        "acme/sharded",
        &[
            ("tokenizer.json", b"{}"),
            ("tokenizer_config.json", b"{}"),
            ("config.json", b"{}"),
            ("model.safetensors.index.json", index),
            ("model-00001-of-00002.safetensors", &shard_1),
            ("model-00002-of-00002.safetensors", &shard_2),
        ],
    );
    files.extend(served(
        "acme/no-weights",
        &[("tokenizer.json", b"{}"), ("tokenizer_config.json", b"{}")],
    ));
    let (url, requests) = fake_hub(files);
    let cache = tempfile::tempdir().unwrap();
    // SAFETY: this test binary has this one test, so no other thread reads the environment concurrently.
    unsafe {
        std::env::set_var("HF_ENDPOINT", &url);
        std::env::set_var("HF_HUB_CACHE", cache.path());
        std::env::remove_var("HF_TOKEN");
        std::env::remove_var("HF_HUB_OFFLINE");
    }

    let dir = resolve_model_for_training("acme/sharded").unwrap();
    assert!(dir.starts_with(cache.path()), "{}", dir.display());
    assert_eq!(
        std::fs::read(dir.join("model-00001-of-00002.safetensors")).unwrap(),
        shard_1
    );
    assert_eq!(
        std::fs::read(dir.join("model-00002-of-00002.safetensors")).unwrap(),
        shard_2
    );
    assert!(dir.join("tokenizer_config.json").is_file());
    let first = requests.lock().unwrap().len();
    assert!(first >= 6, "{:?}", requests.lock().unwrap());

    // Cached now: no request at all.
    assert_eq!(resolve_model_for_training("acme/sharded").unwrap(), dir);
    assert_eq!(
        requests.lock().unwrap().len(),
        first,
        "served from the cache"
    );

    // The data path needs no weights; training does, and says which file is missing.
    resolve_model_path("acme/no-weights").unwrap();
    let err = resolve_model_for_training("acme/no-weights")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("acme/no-weights") && err.contains("model.safetensors"),
        "{err}"
    );
}
