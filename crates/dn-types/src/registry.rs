//! Registry wire types: the manifests the server stores for each pushed `NAME@VERSION`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// One stored file of a dataset or capability.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FileEntry {
    /// Path relative to the artifact's root, `/`-separated.
    pub path: String,
    pub size: u64,
    /// `sha256:<hex>` of the file's bytes.
    pub sha256: String,
}

/// A pushed dataset version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DatasetManifest {
    pub organization_id: String,
    pub name: String,
    pub version: String,
    /// `parquet | csv | arrow | json | jsonl`.
    #[schema(value_type = String)]
    pub format: dn_spec::DataFormat,
    /// The data files training reads, in order (the `train` split when splits exist).
    pub data_files: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub splits: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row_count: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Object)]
    pub data_schema: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Every stored file, `dataset.yaml` included, sorted by path.
    pub files: Vec<FileEntry>,
    /// `sha256:<hex>` over the sorted (path, file digest) list: the identity of this content.
    pub digest: String,
    pub created_at: DateTime<Utc>,
}

/// A pushed capability version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CapabilityManifest {
    pub organization_id: String,
    pub name: String,
    pub version: String,
    pub description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry_agent: Option<String>,
    /// The agent whose body is the SFT system prompt (`agents/<agent>.md`), if any agent exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_agent: Option<String>,
    /// The SFT system prompt: the prompt agent's markdown body, front matter removed, trimmed.
    pub system_prompt: String,
    /// `sha256:<hex>` of `system_prompt`.
    pub system_prompt_digest: String,
    pub files: Vec<FileEntry>,
    pub digest: String,
    pub created_at: DateTime<Utc>,
}

/// Answer of a push: the manifest, and whether this push stored it (false: identical content existed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PushResult<M> {
    pub created: bool,
    pub manifest: M,
}

pub type DatasetPushResult = PushResult<DatasetManifest>;
pub type CapabilityPushResult = PushResult<CapabilityManifest>;

/// `{items}` of a registry listing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ManifestList<M> {
    pub items: Vec<M>,
}

pub type DatasetList = ManifestList<DatasetManifest>;
pub type CapabilityList = ManifestList<CapabilityManifest>;
