//! A GGUF's tokenizer as transformers builds it (byte-level BPE split by the `qwen2` pre-tokenizer's
//! regex, control tokens special), its chat template and family, for the qwen2 and qwen3 tiny models
//! (fixtures from scripts/reference/family_gguf.py).

use std::path::PathBuf;

use dn_render::ModelArtifacts;
use serde_json::Value;

#[test]
fn qwen_gguf_tokenizers_match_transformers() {
    for family in ["qwen2", "qwen3"] {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/families")
            .join(family);
        let from_gguf = ModelArtifacts::load(&dir.join("model.gguf")).unwrap();
        let from_dir = ModelArtifacts::load(&dir.join("model")).unwrap();
        assert_eq!(from_gguf.family(), from_dir.family());
        assert_eq!(from_gguf.end_of_turn[0], "<|im_end|>");
        let fixture: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("gguf_tokens.json")).unwrap())
                .unwrap();
        for sample in fixture["samples"].as_array().unwrap() {
            let text = sample["text"].as_str().unwrap();
            let want: Vec<u32> = serde_json::from_value(sample["input_ids"].clone()).unwrap();
            let got = from_gguf.tokenizer.encode(text, false).unwrap();
            assert_eq!(got.get_ids(), want, "{family}: {text:?}");
        }
        let conversation = dn_data::normalize_row(&serde_json::json!({"messages": [
            {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}))
        .unwrap();
        let render = |a: &ModelArtifacts| {
            a.template
                .render(&conversation.messages, &[], false)
                .unwrap()
        };
        assert_eq!(
            render(&from_gguf),
            render(&from_dir),
            "{family}: chat template"
        );
    }
}
