//! Conversations -> training examples, in parallel, in order, with the counts the job log reports.

use dn_data::{Conversation, apply_system_prompt};
use rayon::prelude::*;
use serde::Serialize;

use crate::artifacts::ModelArtifacts;
use crate::encode::{Example, encode};

#[derive(Debug, Clone)]
pub struct PrepareOptions {
    /// Longer examples keep their last tokens.
    pub max_sequence_length: usize,
    /// The capability's system prompt (empty: none).
    pub system_prompt: String,
}

/// What preparation did, for logs and previews.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
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
}

#[derive(Debug, Default)]
pub struct Prepared {
    pub examples: Vec<Example>,
    pub stats: PrepareStats,
    /// One message per failed conversation (its index in the input and why).
    pub errors: Vec<String>,
}

/// Scaffolds, renders, tokenizes and masks every conversation, across all cores; output order follows
/// input order.
pub fn prepare(
    artifacts: &ModelArtifacts,
    conversations: Vec<Conversation>,
    options: &PrepareOptions,
) -> Prepared {
    let results: Vec<_> = conversations
        .into_par_iter()
        .map(|mut conversation| {
            apply_system_prompt(&mut conversation, &options.system_prompt);
            encode(artifacts, &conversation, options.max_sequence_length)
        })
        .collect();
    let mut prepared = Prepared::default();
    prepared.stats.conversations = results.len();
    for (index, result) in results.into_iter().enumerate() {
        match result {
            Ok(examples) => {
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
