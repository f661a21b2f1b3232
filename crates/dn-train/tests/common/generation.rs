//! Generation references (scripts/reference/generate_parity.py) and greedy completions, shared by the
//! generation and export tests.

use std::path::{Path, PathBuf};

use dn_train::{Finish, LoraModel, SamplingOptions, generate};
use serde_json::Value;

/// tests/fixtures/generate: SmolLM2's reference and its PEFT adapter.
pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/generate")
}

/// The prompts of a reference file and the tokens transformers + PEFT generated from them.
pub fn reference(path: &Path) -> (Vec<Vec<u32>>, Vec<Vec<u32>>) {
    let json: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let ids = |key: &str| serde_json::from_value(json[key].clone()).unwrap();
    (ids("prompts"), ids("tokens"))
}

/// `max_tokens` greedy tokens of each prompt (no stop id: each runs to the end).
pub fn greedy(model: &LoraModel, prompts: &[Vec<u32>], max_tokens: usize) -> Vec<Vec<u32>> {
    let options = SamplingOptions::greedy(max_tokens, vec![]);
    generate(model, prompts, &options, &mut |_, _| true)
        .unwrap()
        .into_iter()
        .map(|c| {
            assert_eq!(c.finish, Finish::Length);
            c.tokens
        })
        .collect()
}

/// The test model imported into `dir` as a model directory (`None` when it is missing).
pub fn imported_smollm2(dir: &Path) -> Option<PathBuf> {
    let gguf = super::test_model()?;
    let imported = dir.join("base");
    dn_model::import_gguf(&gguf, &imported).unwrap();
    Some(imported)
}
