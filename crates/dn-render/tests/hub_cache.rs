//! A hub id resolves through the local hub cache (offline), and an HF model directory renders exactly as
//! the GGUF it was made from.

use dn_data::{ChatMessage, Conversation, Role};
use dn_model::gguf::GgufMetadata;
use dn_model::resolve_model_path;
use dn_render::{ModelArtifacts, encode};

use dn_testkit::test_model as gguf_path;

#[test]
fn hub_ids_resolve_offline_from_the_cache() {
    let Some(gguf) = gguf_path() else { return };
    let from_gguf = ModelArtifacts::load(&gguf).unwrap();
    let template = GgufMetadata::read(&gguf)
        .unwrap()
        .str("tokenizer.chat_template")
        .unwrap()
        .to_owned();

    // The hub cache layout: models--ORG--NAME/refs/main -> snapshots/<revision>/<files>.
    let cache = tempfile::tempdir().unwrap();
    let repo = cache
        .path()
        .join("models--HuggingFaceTB--SmolLM2-135M-Instruct");
    let snapshot = repo.join("snapshots/0123abcd");
    std::fs::create_dir_all(&snapshot).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), "0123abcd").unwrap();
    from_gguf
        .tokenizer
        .save(snapshot.join("tokenizer.json"), false)
        .unwrap();
    let config = serde_json::json!({"chat_template": template, "bos_token": "<|im_start|>", "eos_token": {"content": "<|im_end|>"}});
    std::fs::write(snapshot.join("tokenizer_config.json"), config.to_string()).unwrap();
    std::fs::write(
        snapshot.join("config.json"),
        r#"{"max_position_embeddings": 8192}"#,
    )
    .unwrap();

    // SAFETY: this test binary has this one test, so no other thread reads the environment concurrently.
    unsafe {
        std::env::set_var("HF_HUB_CACHE", cache.path());
        std::env::set_var("HF_HUB_OFFLINE", "1");
    }
    let resolved = resolve_model_path("HuggingFaceTB/SmolLM2-135M-Instruct").unwrap();
    assert_eq!(resolved, snapshot);
    let from_hub = ModelArtifacts::resolve("HuggingFaceTB/SmolLM2-135M-Instruct").unwrap();
    assert_eq!(from_hub.context_length, Some(8192));
    assert_eq!(from_hub.end_of_turn, ["<|im_end|>"]);

    let conversation = Conversation {
        messages: vec![
            ChatMessage::new(Role::User, "Hello, ünïcode ✓"),
            ChatMessage::new(Role::Assistant, "Hi there!\n\n  How can I help?"),
        ],
        tools: vec![],
    };
    assert_eq!(
        encode(&from_hub, &conversation, 4096).unwrap(),
        encode(&from_gguf, &conversation, 4096).unwrap()
    );

    let missing = resolve_model_path("nobody/not-cached")
        .unwrap_err()
        .to_string();
    assert!(
        missing.contains("nobody/not-cached") && missing.contains("tokenizer.json"),
        "{missing}"
    );
    assert!(resolve_model_path("./no/such/dir").is_err());
}
