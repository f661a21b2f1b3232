//! `capability.yaml` + `agents/*.md`, and the SFT system prompt they define.

use chrono::Utc;
use dn_types::{CapabilityManifest, validate_name, validate_version};
use serde::Deserialize;

use crate::dataset::yaml_scalar;
use crate::error::{Error, Result};
use crate::frontmatter::strip_front_matter;
use crate::upload::{Upload, sha256_id};
use crate::yaml::parse_yaml;

const FILE: &str = "capability.yaml";

#[derive(Debug, Deserialize)]
struct CapabilityYaml {
    schema: serde_yaml::Value,
    name: String,
    version: serde_yaml::Value,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    entry_agent: Option<String>,
}

/// Reads and checks a capability upload into a manifest for `org`, system prompt included.
pub fn parse_capability(upload: &Upload, org: &str) -> Result<CapabilityManifest> {
    let yaml: CapabilityYaml = parse_yaml(upload.text(FILE)?, FILE, "YAML")?;
    if yaml_scalar(&yaml.schema).as_deref() != Some("1") {
        return Err(Error::invalid(FILE, "schema must be 1"));
    }
    validate_name(&yaml.name)
        .map_err(|m| Error::invalid(FILE, format!("name '{}': {m}", yaml.name)))?;
    let version = yaml_scalar(&yaml.version)
        .ok_or_else(|| Error::invalid(FILE, "version must be a string like 1.0.0"))?;
    validate_version(&version)
        .map_err(|m| Error::invalid(FILE, format!("version '{version}': {m}")))?;
    let description = yaml.description.unwrap_or_default();
    if description.trim().is_empty() {
        return Err(Error::invalid(FILE, "description must not be empty"));
    }

    // Top-level agents only: agents/<name>.md, sorted by path (the upload is sorted).
    let agents: Vec<&str> = upload
        .files()
        .iter()
        .filter_map(|f| f.path.strip_prefix("agents/"))
        .filter(|rest| !rest.contains('/'))
        .filter_map(|rest| rest.strip_suffix(".md"))
        .collect();
    for agent in &agents {
        let path = format!("agents/{agent}.md");
        let (front, _) = strip_front_matter(upload.text(&path)?);
        if let Some(front) = front {
            parse_yaml::<serde_yaml::Value>(front, &path, "front matter")?;
        }
    }
    let prompt_agent = match &yaml.entry_agent {
        Some(entry) => {
            if !agents.contains(&entry.as_str()) {
                return Err(Error::invalid(
                    FILE,
                    format!("entry_agent '{entry}' has no agents/{entry}.md"),
                ));
            }
            Some(entry.clone())
        }
        None => agents.first().map(|a| (*a).to_owned()),
    };
    let system_prompt = match &prompt_agent {
        Some(agent) => strip_front_matter(upload.text(&format!("agents/{agent}.md"))?)
            .1
            .trim()
            .to_owned(),
        None => String::new(),
    };
    let (files, digest) = upload.digest();
    Ok(CapabilityManifest {
        organization_id: org.to_owned(),
        name: yaml.name,
        version,
        description,
        entry_agent: yaml.entry_agent,
        prompt_agent,
        system_prompt_digest: sha256_id(system_prompt.as_bytes()),
        system_prompt,
        files,
        digest,
        created_at: Utc::now(),
    })
}
