//! Conversations -> training examples, in parallel, in order, with the counts the job log reports.

use dn_data::{Conversation, apply_system_prompt};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::artifacts::ModelArtifacts;
use crate::encode::{Example, SystemFit, TrainOn, encode_conversation};
use crate::error::Error;

#[derive(Debug, Clone)]
pub struct PrepareOptions {
    /// Longer examples keep their last tokens.
    pub max_sequence_length: usize,
    /// The capability's system prompt (empty: none).
    pub system_prompt: String,
    pub train_on: TrainOn,
}

/// What preparation did, for logs and previews.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrepareStats {
    pub conversations: usize,
    pub examples: usize,
    pub tokens: usize,
    pub supervised_tokens: usize,
    pub truncated: usize,
    /// Examples left with no supervised token (e.g. truncation cut every assistant token).
    pub dropped_no_supervised: usize,
    /// Conversations the template could not render or mask.
    pub failed: usize,
    /// Conversations whose system message went in front of the first user message (the template has
    /// no system role).
    pub system_merged_into_user: usize,
    /// Conversations whose system message the template leaves out.
    pub system_dropped_by_template: usize,
}

impl PrepareStats {
    /// What the template did to system messages, in words for logs (empty when it rendered them).
    pub fn system_notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        if self.system_merged_into_user > 0 {
            notes.push(format!(
                "this model's chat template has no system role: the system prompt of {} conversation(s) \
                 was put in front of the first user message, followed by a blank line",
                self.system_merged_into_user
            ));
        }
        if self.system_dropped_by_template > 0 {
            notes.push(format!(
                "this model's chat template leaves the system message out of a conversation that ends \
                 with an assistant turn: {} conversation(s) train without their system prompt",
                self.system_dropped_by_template
            ));
        }
        notes
    }
}

#[derive(Debug, Default)]
pub struct Prepared {
    pub examples: Vec<Example>,
    pub stats: PrepareStats,
    /// One message per failed conversation (its index in the input and why).
    pub errors: Vec<String>,
    /// The template ran past a limit: the job cannot use this model's template (the remaining
    /// conversations were not rendered).
    pub template_limit: Option<String>,
}

/// Scaffolds, renders, tokenizes and masks every conversation, across all cores; output order follows
/// input order.
pub fn prepare(
    artifacts: &ModelArtifacts,
    conversations: Vec<Conversation>,
    options: &PrepareOptions,
) -> Prepared {
    prepare_until(
        artifacts,
        conversations,
        options,
        &std::sync::atomic::AtomicBool::new(false),
    )
}

/// [`prepare`], giving up on the conversations not yet rendered once `stop` is set (a cancelled job).
pub fn prepare_until(
    artifacts: &ModelArtifacts,
    conversations: Vec<Conversation>,
    options: &PrepareOptions,
    stop: &std::sync::atomic::AtomicBool,
) -> Prepared {
    prepare_observed(artifacts, conversations, options, stop, &|_, _| {})
}

/// [`prepare_until`], calling `observe(index, true)` before conversation `index` is rendered and
/// `observe(index, false)` after (from the rendering threads): what a supervisor needs to name the row
/// a process died on.
pub fn prepare_observed(
    artifacts: &ModelArtifacts,
    conversations: Vec<Conversation>,
    options: &PrepareOptions,
    stop: &std::sync::atomic::AtomicBool,
    observe: &(dyn Fn(usize, bool) + Sync),
) -> Prepared {
    // A template that runs past its limits on one conversation is stopped for all: no row waits out the
    // same runaway loop again.
    let stopped = std::sync::atomic::AtomicBool::new(false);
    let results: Vec<_> = conversations
        .into_par_iter()
        .enumerate()
        .map(|(index, mut conversation)| {
            if stopped.load(std::sync::atomic::Ordering::Relaxed)
                || stop.load(std::sync::atomic::Ordering::Relaxed)
            {
                return None;
            }
            observe(index, true);
            apply_system_prompt(&mut conversation, &options.system_prompt);
            let result = encode_conversation(
                artifacts,
                &conversation,
                options.max_sequence_length,
                options.train_on,
            );
            observe(index, false);
            if matches!(result, Err(Error::TemplateLimit(_))) {
                stopped.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            Some(result)
        })
        .collect();
    let mut prepared = Prepared::default();
    prepared.stats.conversations = results.len();
    for (index, result) in results.into_iter().enumerate() {
        // Not rendered: the job is stopping (cancelled, or the template hit a limit on another one).
        let Some(result) = result else {
            prepared.stats.failed += 1;
            continue;
        };
        match result {
            Ok((examples, fit)) => {
                match fit {
                    SystemFit::AsIs => {}
                    SystemFit::Merged => prepared.stats.system_merged_into_user += 1,
                    SystemFit::Dropped => prepared.stats.system_dropped_by_template += 1,
                }
                for example in examples {
                    if example.num_supervised() == 0 {
                        prepared.stats.dropped_no_supervised += 1;
                        continue;
                    }
                    prepared.stats.examples += 1;
                    prepared.stats.tokens += example.input_ids.len();
                    prepared.stats.supervised_tokens += example.num_supervised();
                    prepared.stats.truncated += usize::from(example.truncated);
                    prepared.examples.push(example);
                }
            }
            Err(Error::TemplateLimit(message)) => {
                prepared.stats.failed += 1;
                if prepared.template_limit.is_none() {
                    prepared.template_limit =
                        Some(format!("conversation {}: {message}", index + 1));
                }
            }
            Err(e) => {
                prepared.stats.failed += 1;
                prepared
                    .errors
                    .push(format!("conversation {}: {e}", index + 1));
            }
        }
    }
    prepared
}
