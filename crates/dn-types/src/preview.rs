//! The dataset viewer's wire types (`POST /org/{org}/datasets/{name}/{version}/preview`): a few rows of a
//! dataset as the trainer will see them with a model's chat template, token by token.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Rows previewed unless asked otherwise, and at most.
pub const DEFAULT_PREVIEW_ROWS: i64 = 5;
pub const MAX_PREVIEW_ROWS: i64 = 20;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DatasetPreviewRequest {
    /// A model of the server's catalog (`GET /training/catalog`): its chat template and tokenizer.
    pub model: String,
    /// `NAME@VERSION` of a capability of the organization: its system prompt scaffolds the rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capability: Option<String>,
    /// Conversations rendered (1 to 20, default 5), from the first row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<i64>,
    /// Tokens kept per example (default 2048).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_sequence_length: Option<i64>,
    /// `assistant` (default), `last_assistant` or `all`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_on: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PreviewToken {
    /// The token's text (its bytes decoded alone; a piece of a multi-byte character shows as U+FFFD).
    pub text: String,
    /// The loss covers it.
    pub supervised: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PreviewExample {
    pub tokens: Vec<PreviewToken>,
    pub num_tokens: usize,
    pub num_supervised: usize,
    /// Cut at `max_sequence_length`.
    pub truncated: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DatasetPreview {
    pub model: String,
    /// Rows read (conversations and skipped rows) before the limit.
    pub rows_read: usize,
    pub examples: Vec<PreviewExample>,
    /// Rows that fit no shape, with file and row.
    pub skipped_rows: Vec<String>,
    /// Conversations the template could not render or mask.
    pub errors: Vec<String>,
    /// How the system prompt met the template, examples dropped for having no supervised token.
    pub notes: Vec<String>,
}
