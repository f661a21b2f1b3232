//! Shared by the worker tests: a minimal job (its runner decides what happens), and the SFT runner's setup.
#![allow(dead_code)]

pub mod flaky;
pub mod sft;

use dn_store::NewJob;
use dn_types::{CapabilitySnapshot, DatasetRef};
use serde_json::Map;

/// A job of `acme/main` on model `m` with dataset `d@1.0.0` and capability `c@1.0.0`.
pub fn new_job() -> NewJob {
    NewJob {
        organization_id: "acme".into(),
        workspace_id: "main".into(),
        name: None,
        model: "m".into(),
        project_ref: None,
        run_ref: None,
        dataset_ref: Some(DatasetRef {
            name: "d".into(),
            version: "1.0.0".into(),
        }),
        trajectory_dataset_refs: vec![],
        capability: CapabilitySnapshot {
            artifact_id: None,
            name: "c".into(),
            version: "1.0.0".into(),
            runtime_digest: None,
            organization_id: None,
            content_digest: None,
            system_prompt_digest: None,
        },
        config: Map::new(),
        tags: vec![],
    }
}
