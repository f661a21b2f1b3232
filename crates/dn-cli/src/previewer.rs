//! The dataset viewer's previews for `dn serve` and `--local`: `dn_worker::preview_dataset` in a scratch
//! directory under the data directory, in the memory-limited preparation process where workers use one.

use std::path::PathBuf;

use async_trait::async_trait;
use dn_registry::Registry;
use dn_server::{DatasetPreviewer, PreviewJob};
use dn_types::DatasetPreview;
use dn_worker::{PreviewRequest, Sandbox, preview_dataset};

pub struct SandboxPreviewer {
    pub registry: Registry,
    pub sandbox: Option<Sandbox>,
    /// Parent of each preview's scratch directory (created when needed).
    pub scratch: PathBuf,
}

#[async_trait]
impl DatasetPreviewer for SandboxPreviewer {
    async fn preview(&self, job: PreviewJob) -> Result<DatasetPreview, String> {
        std::fs::create_dir_all(&self.scratch)
            .map_err(|e| format!("cannot create {}: {e}", self.scratch.display()))?;
        let scratch = tempfile::tempdir_in(&self.scratch)
            .map_err(|e| format!("cannot create a scratch directory: {e}"))?;
        preview_dataset(
            &self.registry,
            self.sandbox.as_ref(),
            scratch.path(),
            PreviewRequest {
                dataset: &job.dataset,
                model: &job.model,
                system_prompt: &job.system_prompt,
                limit: job.limit,
                max_sequence_length: job.max_sequence_length,
                train_on: job.train_on,
            },
        )
        .await
    }
}
