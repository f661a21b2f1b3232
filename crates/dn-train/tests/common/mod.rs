//! Shared test helpers: the tiny in-memory model and the real test model's path.
#![allow(dead_code)]

pub mod families;
pub mod generation;
pub mod tiny;

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

pub use dn_testkit::test_model;
