//! The dataset viewer's wire types (`POST /org/{org}/datasets/{name}/{version}/preview`): a few rows of a
//! dataset as the trainer will see them with a model's chat template, token by token.

use dn_spec::TrainOn;
use dn_spec::defaults as spec;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{Error, Result};
use crate::extensions::parsed;
use crate::refs::ArtifactRef;

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

/// A preview request that passed every check that needs no I/O, typed.
#[derive(Debug, Clone, PartialEq)]
pub struct PreviewSpec {
    pub model: String,
    pub capability: Option<ArtifactRef>,
    pub limit: usize,
    pub max_sequence_length: usize,
    pub train_on: TrainOn,
}

/// Checks a preview request and fills in defaults (as a job's would be: the same `train_on`).
pub fn validate_preview_request(request: &DatasetPreviewRequest) -> Result<PreviewSpec> {
    let within = |value: Option<i64>, field: &str, default: u32, max: u32| match value {
        None => Ok(default as usize),
        Some(v) if (1..=i64::from(max)).contains(&v) => Ok(v as usize),
        Some(v) => Err(Error::invalid(
            field,
            format!("must be between 1 and {max} (got {v})"),
        )),
    };
    Ok(PreviewSpec {
        model: request.model.clone(),
        capability: request
            .capability
            .as_deref()
            .map(|text| ArtifactRef::parse(text, "capability"))
            .transpose()?,
        limit: within(
            request.limit,
            "limit",
            spec::PREVIEW_ROWS,
            spec::MAX_PREVIEW_ROWS,
        )?,
        max_sequence_length: within(
            request.max_sequence_length,
            "max_sequence_length",
            spec::MAX_SEQUENCE_LENGTH,
            spec::MAX_PREVIEW_TOKENS,
        )?,
        train_on: parsed(request.train_on.as_deref(), TrainOn::parse, "")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preview_requests_are_typed_once_and_bad_values_name_their_field() {
        let mut request = DatasetPreviewRequest {
            model: "m".into(),
            capability: None,
            limit: None,
            max_sequence_length: None,
            train_on: None,
        };
        let spec = validate_preview_request(&request).unwrap();
        assert_eq!(
            (spec.limit, spec.max_sequence_length, spec.train_on),
            (5, 2048, TrainOn::Assistant)
        );
        request.train_on = Some("bogus".into());
        let err = validate_preview_request(&request).unwrap_err();
        assert_eq!(err.field(), "train_on");
        request.train_on = Some("all".into());
        request.limit = Some(21);
        assert_eq!(
            validate_preview_request(&request).unwrap_err().field(),
            "limit"
        );
        request.limit = None;
        request.capability = Some("x@latest".into());
        assert_eq!(
            validate_preview_request(&request).unwrap_err().field(),
            "capability"
        );
    }
}
