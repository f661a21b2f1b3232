//! Validation of a create-job request into a checked [`SftJobSpec`]. The server validates once; the worker
//! reads the effective config back ([`SftConfig::from_map`]), typed: options are dn-spec's enums and refs
//! are [`ArtifactRef`]s, so nothing below parses a string again (a stored value this build does not know
//! is an error naming its field).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::extensions::{TrainingExtras, validate_extras};
use dn_spec::defaults as spec;

use crate::job::{CreateTinkerSftJobRequest, DatasetRef};
use crate::refs::ArtifactRef;

/// The values a request's missing fields take and the deployment's limits. The values are dn-spec's
/// defaults; a deployment sets only [`SftLimits`].
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct SftDefaults {
    /// The largest values a job may ask for (a deployment setting).
    pub limits: SftLimits,
}

/// The deployment's maxima of the options that size a job (dn-spec's one limits table).
pub type SftLimits = dn_spec::Limits;

/// The effective SFT configuration stored on the job (`TrainingJob.config`): every default filled in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SftConfig {
    /// Stored under the wire's names (`dataset_ref`, ...), read back as checked refs.
    #[serde(
        rename = "dataset_ref",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub dataset: Option<ArtifactRef>,
    #[serde(rename = "trajectory_dataset_refs", default)]
    pub trajectory_datasets: Vec<ArtifactRef>,
    #[serde(
        rename = "eval_dataset_ref",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub eval_dataset: Option<ArtifactRef>,
    pub max_sequence_length: u32,
    pub batch_size: u32,
    pub gradient_accumulation_steps: u32,
    pub learning_rate: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epochs: Option<u32>,
    pub lora_rank: u32,
    pub lora_alpha: u32,
    pub checkpoint_interval: u32,
    /// dn's extensions, stored flat next to the reference's fields.
    #[serde(flatten)]
    pub extras: TrainingExtras,
}

impl SftConfig {
    pub fn to_map(&self) -> Map<String, Value> {
        match serde_json::to_value(self) {
            Ok(Value::Object(map)) => map,
            _ => unreachable!("SftConfig always serializes to a JSON object"),
        }
    }

    /// A stored config read back; an error names the field (`train_on: unknown value ...`,
    /// `trajectory_dataset_refs[1]: ...`).
    pub fn from_map(map: &Map<String, Value>) -> Result<Self> {
        serde_path_to_error::deserialize(Value::Object(map.clone())).map_err(|e| {
            let path = e.path().to_string();
            let message = e.into_inner().to_string();
            // A flattened field's path is `?`; dn-spec's errors name their option (`train_on: ...`).
            match path.as_str() {
                "." | "?" => match message.split_once(": ") {
                    Some((field, rest)) if !field.contains(char::is_whitespace) => {
                        Error::invalid(format!("config.{field}"), rest)
                    }
                    _ => Error::invalid("config", message),
                },
                _ => Error::invalid(format!("config.{path}"), message),
            }
        })
    }

    /// Every dataset ref with the JSON path it came from, in the order training merges them.
    pub fn dataset_refs(&self) -> Vec<(String, &ArtifactRef)> {
        let mut refs = Vec::new();
        if let Some(r) = &self.dataset {
            refs.push(("config.dataset_ref".to_owned(), r));
        }
        for (i, r) in self.trajectory_datasets.iter().enumerate() {
            refs.push((format!("config.trajectory_dataset_refs[{i}]"), r));
        }
        if let Some(r) = &self.eval_dataset {
            refs.push(("config.eval_dataset_ref".to_owned(), r));
        }
        refs
    }
}

/// A create-job request that passed every check that needs no I/O.
#[derive(Debug, Clone, PartialEq)]
pub struct SftJobSpec {
    pub name: Option<String>,
    pub model: String,
    pub project_ref: Option<String>,
    pub run_ref: Option<String>,
    pub tags: Vec<String>,
    pub capability: ArtifactRef,
    pub config: SftConfig,
}

const REQUIRE_DATASET: &str =
    "Tinker SFT jobs require dataset_ref or at least one trajectory_dataset_ref";

/// Checks a request and fills in defaults.
pub fn validate_sft_request(
    req: &CreateTinkerSftJobRequest,
    defaults: &SftDefaults,
) -> Result<SftJobSpec> {
    let model = req.model.trim();
    if model.is_empty() {
        return Err(Error::invalid("model", "must not be empty"));
    }
    let name = optional_text(&req.name, "name", 200)?;
    let project_ref = optional_text(&req.project_ref, "project_ref", 200)?;
    let run_ref = optional_text(&req.run_ref, "run_ref", 200)?;
    if req.tags.len() > 50 {
        return Err(Error::invalid("tags", "at most 50 tags"));
    }
    for (i, tag) in req.tags.iter().enumerate() {
        if tag.trim().is_empty() || tag.len() > 100 {
            return Err(Error::invalid(
                format!("tags[{i}]"),
                "a tag must be 1 to 100 characters",
            ));
        }
    }
    let capability = wire_ref(&req.capability_ref, "capability_ref")?;

    let c = &req.config;
    let dataset = c
        .dataset_ref
        .as_ref()
        .map(|r| wire_ref(r, "config.dataset_ref"))
        .transpose()?;
    let trajectory_datasets = c
        .trajectory_dataset_refs
        .iter()
        .enumerate()
        .map(|(i, r)| wire_ref(r, &format!("config.trajectory_dataset_refs[{i}]")))
        .collect::<Result<Vec<_>>>()?;
    if dataset.is_none() && trajectory_datasets.is_empty() {
        return Err(Error::invalid("config.dataset_ref", REQUIRE_DATASET));
    }
    let eval_dataset = c
        .eval_dataset_ref
        .as_ref()
        .map(|r| wire_ref(r, "config.eval_dataset_ref"))
        .transpose()?;

    let learning_rate = c.learning_rate.unwrap_or(spec::LEARNING_RATE);
    if !(learning_rate.is_finite() && learning_rate > 0.0 && learning_rate <= 1.0) {
        return Err(Error::invalid(
            "config.learning_rate",
            format!("must be > 0 and <= 1 (got {learning_rate})"),
        ));
    }
    let limits = &defaults.limits;
    let lora_rank = bounded(c.lora_rank, "config.lora_rank", 1, limits.lora_rank.into())?
        .unwrap_or(spec::LORA_RANK);
    let config = SftConfig {
        dataset,
        trajectory_datasets,
        eval_dataset,
        max_sequence_length: bounded(
            c.max_sequence_length,
            "config.max_sequence_length",
            1,
            limits.max_sequence_length.into(),
        )?
        .unwrap_or(spec::MAX_SEQUENCE_LENGTH),
        batch_size: bounded(
            c.batch_size,
            "config.batch_size",
            1,
            limits.batch_size.into(),
        )?
        .unwrap_or(spec::BATCH_SIZE),
        gradient_accumulation_steps: bounded(
            c.gradient_accumulation_steps,
            "config.gradient_accumulation_steps",
            1,
            spec::MAX_GRADIENT_ACCUMULATION_STEPS.into(),
        )?
        .unwrap_or(spec::GRADIENT_ACCUMULATION_STEPS),
        learning_rate,
        steps: bounded(c.steps, "config.steps", 1, limits.steps.into())?,
        epochs: bounded(c.epochs, "config.epochs", 1, spec::MAX_EPOCHS.into())?,
        lora_rank,
        lora_alpha: bounded(
            c.lora_alpha,
            "config.lora_alpha",
            1,
            spec::MAX_LORA_ALPHA.into(),
        )?
        .unwrap_or(spec::lora_alpha(lora_rank)),
        checkpoint_interval: bounded(
            c.checkpoint_interval,
            "config.checkpoint_interval",
            1,
            spec::MAX_CHECKPOINT_INTERVAL.into(),
        )?
        .unwrap_or(spec::CHECKPOINT_INTERVAL),
        extras: validate_extras(c)?,
    };
    Ok(SftJobSpec {
        name,
        model: model.to_owned(),
        project_ref,
        run_ref,
        tags: req.tags.clone(),
        capability,
        config,
    })
}

fn wire_ref(r: &DatasetRef, field: &str) -> Result<ArtifactRef> {
    ArtifactRef::from_parts(&r.name, &r.version, field)
}

fn bounded(value: Option<i64>, field: &str, min: i64, max: i64) -> Result<Option<u32>> {
    match value {
        None => Ok(None),
        Some(v) if v < min => Err(Error::invalid(field, format!("must be >= {min} (got {v})"))),
        Some(v) if v > max => Err(Error::invalid(
            field,
            format!("must be <= {max} (got {v}; the deployment's limit)"),
        )),
        Some(v) => Ok(Some(v as u32)),
    }
}

fn optional_text(value: &Option<String>, field: &str, max_len: usize) -> Result<Option<String>> {
    match value {
        None => Ok(None),
        Some(text) if text.len() > max_len => Err(Error::invalid(
            field,
            format!("must be at most {max_len} characters"),
        )),
        Some(text) if text.chars().any(char::is_control) => {
            Err(Error::invalid(field, "must not contain control characters"))
        }
        Some(text) => Ok(Some(text.clone())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::TinkerSftJobConfig;

    fn docs_example() -> serde_json::Value {
        // As the reference SDK sends the docs' example: model_dump(mode="json", exclude_none=True).
        serde_json::json!({
            "model": "meta-llama/Llama-3.1-8B-Instruct",
            "capability_ref": {"name": "support-agent", "version": "1.0.0"},
            "tags": [],
            "backend": "tinker",
            "trainer_type": "sft",
            "config": {
                "dataset_ref": {"name": "support-demos", "version": "0.1.0"},
                "trajectory_dataset_refs": [],
                "eval_dataset_ref": {"name": "support-eval", "version": "0.1.0"},
                "batch_size": 8, "learning_rate": 1e-4, "steps": 100, "lora_rank": 16
            }
        })
    }

    #[test]
    fn accepts_the_docs_example_and_fills_defaults() {
        let req: CreateTinkerSftJobRequest = serde_json::from_value(docs_example()).unwrap();
        let spec = validate_sft_request(&req, &SftDefaults::default()).unwrap();
        assert_eq!(spec.capability.to_string(), "support-agent@1.0.0");
        let c = &spec.config;
        assert_eq!(
            (c.batch_size, c.steps, c.lora_rank, c.lora_alpha),
            (8, Some(100), 16, 32)
        );
        assert_eq!(
            (
                c.max_sequence_length,
                c.gradient_accumulation_steps,
                c.checkpoint_interval
            ),
            (2048, 1, 10)
        );
        assert_eq!(SftConfig::from_map(&c.to_map()).unwrap(), *c);
    }

    #[test]
    fn rejects_unknown_fields_with_their_name() {
        let mut body = docs_example();
        body["config"]["lora_rnk"] = 4.into();
        let err = serde_json::from_value::<CreateTinkerSftJobRequest>(body).unwrap_err();
        assert!(err.to_string().contains("lora_rnk"), "{err}");
    }

    #[test]
    fn requires_a_dataset_and_checks_bounds() {
        let mut req: CreateTinkerSftJobRequest = serde_json::from_value(docs_example()).unwrap();
        let defaults = SftDefaults::default();
        req.config = TinkerSftJobConfig::default();
        let err = validate_sft_request(&req, &defaults).unwrap_err();
        assert!(err.to_string().contains(REQUIRE_DATASET));

        let mut req: CreateTinkerSftJobRequest = serde_json::from_value(docs_example()).unwrap();
        req.config.batch_size = Some(0);
        assert_eq!(
            validate_sft_request(&req, &defaults).unwrap_err().field(),
            "config.batch_size"
        );
        req.config.batch_size = None;
        req.config.learning_rate = Some(-1.0);
        assert_eq!(
            validate_sft_request(&req, &defaults).unwrap_err().field(),
            "config.learning_rate"
        );
        req.config.learning_rate = None;
        req.config.trajectory_dataset_refs = vec![
            DatasetRef {
                name: "ok".into(),
                version: "1.0.0".into(),
            },
            DatasetRef {
                name: "../x".into(),
                version: "1.0.0".into(),
            },
        ];
        assert_eq!(
            validate_sft_request(&req, &defaults).unwrap_err().field(),
            "config.trajectory_dataset_refs[1]"
        );
    }
}
