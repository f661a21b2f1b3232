//! `import_gguf` against the reference: every tensor dequantized and un-permuted as gguf-py and
//! transformers do (scripts/reference/gguf_import.py), and the written directory usable as a model.

use dn_data::{ChatMessage, Conversation, Role};
use dn_model::import_gguf;
use dn_render::{ModelArtifacts, encode};
use safetensors::SafeTensors;
use serde_json::Value;

use dn_testkit::test_model as gguf_path;

fn close(a: f64, b: f64, tolerance: f64) -> bool {
    (a - b).abs() <= tolerance * (1.0 + b.abs())
}

#[test]
fn import_matches_the_reference_and_loads() {
    let Some(gguf) = gguf_path() else { return };
    let out = tempfile::tempdir().unwrap();
    let summary = import_gguf(&gguf, out.path()).unwrap();
    assert_eq!(summary.tensors, 272);
    assert_eq!(
        summary.parameters, 134_515_008,
        "SmolLM2-135M with tied embeddings"
    );

    let reference: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/smollm2_import_reference.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let bytes = std::fs::read(out.path().join("model.safetensors")).unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    let expected = reference["tensors"].as_object().unwrap();
    assert_eq!(file.names().len(), expected.len());
    for (name, want) in expected {
        let tensor = file
            .tensor(name)
            .unwrap_or_else(|_| panic!("{name} missing"));
        let shape: Vec<usize> = want["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(tensor.shape(), shape, "{name}");
        let values: Vec<f32> = tensor
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let sum: f64 = values.iter().map(|v| f64::from(*v)).sum();
        let abs_sum: f64 = values.iter().map(|v| f64::from(v.abs())).sum();
        assert!(
            close(sum, want["sum"].as_f64().unwrap(), 1e-6),
            "{name}: sum {sum} vs {}",
            want["sum"]
        );
        assert!(
            close(abs_sum, want["abs_sum"].as_f64().unwrap(), 1e-9),
            "{name}: abs sum"
        );
        for (i, v) in want["first"].as_array().unwrap().iter().enumerate() {
            assert_eq!(values[i], v.as_f64().unwrap() as f32, "{name}[{i}]");
        }
        for pick in want["picks"].as_array().unwrap() {
            let i = pick[0].as_u64().unwrap() as usize;
            assert_eq!(values[i], pick[1].as_f64().unwrap() as f32, "{name}[{i}]");
        }
    }

    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("config.json")).unwrap())
            .unwrap();
    for (key, value) in [
        ("hidden_size", 576.0),
        ("intermediate_size", 1536.0),
        ("num_hidden_layers", 30.0),
        ("num_attention_heads", 9.0),
        ("num_key_value_heads", 3.0),
        ("vocab_size", 49152.0),
        ("rope_theta", 100000.0),
        ("max_position_embeddings", 8192.0),
    ] {
        assert_eq!(config[key].as_f64(), Some(value), "config.json {key}");
    }
    assert_eq!(config["tie_word_embeddings"], true);

    // The directory renders and tokenizes exactly as the GGUF does.
    let from_dir = ModelArtifacts::load(out.path()).unwrap();
    let from_gguf = ModelArtifacts::load(&gguf).unwrap();
    let conversation = Conversation {
        messages: vec![
            ChatMessage::new(Role::User, "Hi ✓"),
            ChatMessage::new(Role::Assistant, "Hello!\n  there"),
        ],
        tools: vec![],
    };
    assert_eq!(
        encode(&from_dir, &conversation, 512).unwrap(),
        encode(&from_gguf, &conversation, 512).unwrap()
    );
    assert_eq!(from_dir.context_length, Some(8192));
}
