//! The SFT job runner: prepares the job's inputs (model, capability, datasets -> masked examples), logs
//! what it prepared, then hands them to the trainer. The trainer lands with the next issue; until then
//! the job fails with "trainer not available" after its data was really prepared.

use async_trait::async_trait;
use dn_registry::Registry;
use dn_types::{LogLevel, TrainingJob};

use crate::inputs::prepare_inputs;
use crate::runner::{JobRunner, RunContext, RunError, RunOutput};

pub struct SftRunner {
    registry: Registry,
}

impl SftRunner {
    pub fn new(registry: Registry) -> Self {
        SftRunner { registry }
    }
}

#[async_trait]
impl JobRunner for SftRunner {
    async fn run(&self, job: &TrainingJob, ctx: &RunContext) -> Result<RunOutput, RunError> {
        let inputs = prepare_inputs(&self.registry, job).await?;
        let s = &inputs.train_stats;
        let message = format!(
            "prepared {} training example(s): {} tokens, {} supervised, {} truncated, {} dropped; {} row(s) skipped",
            s.examples,
            s.tokens,
            s.supervised_tokens,
            s.truncated,
            s.dropped_no_supervised,
            inputs.skipped_rows.len()
        );
        ctx.progress()
            .log(LogLevel::Info, message, inputs.summary())
            .await?;
        for row in inputs.skipped_rows.iter().take(20) {
            ctx.progress()
                .log(
                    LogLevel::Warning,
                    format!("skipped {row}"),
                    Default::default(),
                )
                .await?;
        }
        if ctx.cancel_requested() {
            return Err(RunError::Cancelled {
                partial: Box::default(),
            });
        }
        Err(RunError::failed("trainer not available"))
    }
}
