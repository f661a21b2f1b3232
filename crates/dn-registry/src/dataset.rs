//! `dataset.yaml`: name, version, format, and which files hold the training rows.

use std::collections::BTreeMap;

use chrono::Utc;
use dn_spec::DataFormat;
use dn_types::{DatasetManifest, validate_name, validate_version};
use serde::Deserialize;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::upload::Upload;
use crate::yaml::parse_yaml;

const FILE: &str = "dataset.yaml";

#[derive(Debug, Deserialize)]
struct DatasetYaml {
    name: String,
    version: serde_yaml::Value,
    format: String,
    #[serde(default)]
    splits: BTreeMap<String, String>,
    #[serde(default)]
    files: Vec<String>,
    #[serde(default)]
    row_count: Option<u64>,
    #[serde(default)]
    data_schema: Option<Value>,
    #[serde(default)]
    description: Option<String>,
}

/// Reads and checks `dataset.yaml` of an upload into a manifest for `org`.
pub fn parse_dataset(upload: &Upload, org: &str) -> Result<DatasetManifest> {
    let yaml: DatasetYaml = parse_yaml(upload.text(FILE)?, FILE, "YAML")?;
    validate_name(&yaml.name)
        .map_err(|m| Error::invalid(FILE, format!("name '{}': {m}", yaml.name)))?;
    let version = yaml_scalar(&yaml.version)
        .ok_or_else(|| Error::invalid(FILE, "version must be a string like 0.1.0"))?;
    validate_version(&version)
        .map_err(|m| Error::invalid(FILE, format!("version '{version}': {m}")))?;
    let format = DataFormat::parse(&yaml.format).map_err(|_| {
        Error::invalid(
            FILE,
            format!(
                "format '{}' must be one of {}",
                yaml.format,
                DataFormat::NAMES.join(", ")
            ),
        )
    })?;
    for (split, path) in &yaml.splits {
        require_file(upload, path, &format!("splits.{split}"))?;
    }
    for path in &yaml.files {
        require_file(upload, path, "files")?;
    }
    // The files training reads: the train split, else the listed files, else every file of the format.
    let data_files: Vec<String> = if !yaml.splits.is_empty() {
        let train = yaml.splits.get("train").ok_or_else(|| {
            Error::invalid(
                FILE,
                "splits must include 'train' (the split training reads)",
            )
        })?;
        vec![train.clone()]
    } else if !yaml.files.is_empty() {
        yaml.files.clone()
    } else {
        let extension = format!(".{format}");
        upload
            .files()
            .iter()
            .map(|f| f.path.clone())
            .filter(|p| p.ends_with(&extension))
            .collect()
    };
    if data_files.is_empty() {
        return Err(Error::invalid(
            FILE,
            format!("no data files: list them under 'files' or upload *.{format} files"),
        ));
    }
    let (files, digest) = upload.digest();
    Ok(DatasetManifest {
        organization_id: org.to_owned(),
        name: yaml.name,
        version,
        format,
        data_files,
        splits: yaml.splits,
        row_count: yaml.row_count,
        data_schema: yaml.data_schema,
        description: yaml.description,
        files,
        digest,
        created_at: Utc::now(),
    })
}

fn require_file(upload: &Upload, path: &str, field: &str) -> Result<()> {
    crate::upload::validate_relative_path(path)?;
    if upload.get(path).is_none() {
        return Err(Error::invalid(
            FILE,
            format!("{field} names '{path}', which is not in the upload"),
        ));
    }
    Ok(())
}

/// A YAML scalar as text (`version: 1.0.0` is a string, but `version: 1` is a number).
pub(crate) fn yaml_scalar(value: &serde_yaml::Value) -> Option<String> {
    match value {
        serde_yaml::Value::String(s) => Some(s.clone()),
        serde_yaml::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}
