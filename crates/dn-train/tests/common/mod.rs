//! Shared test helpers: the tiny in-memory model and the real test model's path.
#![allow(dead_code)]

pub mod families;
pub mod generation;
pub mod tiny;

use std::path::PathBuf;

use dn_train::{Sequence, TrainExample};

/// The examples as the loss functions take them.
pub fn sequences(examples: &[TrainExample]) -> Vec<Sequence<'_>> {
    examples
        .iter()
        .map(|e| Sequence {
            input_ids: &e.input_ids,
            loss_mask: &e.loss_mask,
        })
        .collect()
}

/// The SmolLM2 GGUF fetched by scripts/fetch-test-model.sh; `None` (test skipped) unless
/// DN_REQUIRE_TEST_MODEL=1, which makes its absence an error.
pub fn test_model() -> Option<PathBuf> {
    let path = std::env::var("DN_TEST_MODEL_GGUF")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../.cache/models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf")
        });
    if path.is_file() {
        return Some(path);
    }
    assert!(
        std::env::var("DN_REQUIRE_TEST_MODEL").as_deref() != Ok("1"),
        "{} missing",
        path.display()
    );
    None
}
