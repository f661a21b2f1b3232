//! `NAME@VERSION` refs with an optional `org/` prefix, and the name and version rules every registry shares.
//!
//! These checks run before any name reaches a storage key: a name that passes holds only `[a-z0-9-]`, so no
//! `..`, slash, NUL or absolute path can get through.

use std::fmt;

use crate::error::{Error, Result};
use crate::job::DatasetRef;

/// What a ref points at; used in messages ("dataset support-demos@0.1.0 not found").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ArtifactKind {
    Dataset,
    Capability,
}

impl ArtifactKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ArtifactKind::Dataset => "dataset",
            ArtifactKind::Capability => "capability",
        }
    }
}

impl fmt::Display for ArtifactKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A validated `[org/]name@version`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ArtifactRef {
    pub org: Option<String>,
    pub name: String,
    pub version: String,
}

impl ArtifactRef {
    /// Parses `[org/]name@version` as typed on a command line; `field` names the flag or JSON path in errors.
    pub fn parse(text: &str, field: &str) -> Result<Self> {
        let (name, version) = text.rsplit_once('@').ok_or_else(|| {
            Error::invalid(
                field,
                format!("'{text}' must be NAME@VERSION (a version is required)"),
            )
        })?;
        Self::from_parts(name, version, field)
    }

    /// Builds a ref from the wire shape `{name, version}` where `name` may carry an `org/` prefix.
    pub fn from_parts(name: &str, version: &str, field: &str) -> Result<Self> {
        let (org, bare) = match name.split_once('/') {
            Some((org, bare)) => (Some(org), bare),
            None => (None, name),
        };
        if let Some(org) = org {
            validate_name(org)
                .map_err(|m| Error::invalid(field, format!("organization in '{name}': {m}")))?;
        }
        validate_name(bare).map_err(|m| Error::invalid(field, format!("name '{name}': {m}")))?;
        validate_version(version)
            .map_err(|m| Error::invalid(field, format!("version of '{name}@{version}': {m}")))?;
        Ok(ArtifactRef {
            org: org.map(str::to_owned),
            name: bare.to_owned(),
            version: version.to_owned(),
        })
    }

    /// The organization this ref lives in: its own prefix, else `default_org`.
    pub fn org_or<'a>(&'a self, default_org: &'a str) -> &'a str {
        self.org.as_deref().unwrap_or(default_org)
    }

    /// The wire name: `org/name` when an org prefix was given, else `name`.
    pub fn wire_name(&self) -> String {
        match &self.org {
            Some(org) => format!("{org}/{}", self.name),
            None => self.name.clone(),
        }
    }
}

impl ArtifactRef {
    /// The wire shape `{name, version}`.
    pub fn to_wire(&self) -> DatasetRef {
        DatasetRef {
            name: self.wire_name(),
            version: self.version.clone(),
        }
    }
}

/// Stored and sent as the wire shape `{name, version}`; read back, it is checked again (a stored config
/// whose ref no longer validates is an error naming the ref, not a path into storage).
impl serde::Serialize for ArtifactRef {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        serde::Serialize::serialize(&self.to_wire(), serializer)
    }
}

impl<'de> serde::Deserialize<'de> for ArtifactRef {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Self, D::Error> {
        let wire = <DatasetRef as serde::Deserialize>::deserialize(deserializer)?;
        ArtifactRef::from_parts(&wire.name, &wire.version, "ref").map_err(|e| match e {
            Error::InvalidField { message, .. } => serde::de::Error::custom(message),
        })
    }
}

impl fmt::Display for ArtifactRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.wire_name(), self.version)
    }
}

/// A registry or organization name: `^[a-z0-9][a-z0-9-]*$`, at most 100 characters.
pub fn validate_name(name: &str) -> std::result::Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name.len() > 100 {
        return Err("must be at most 100 characters".into());
    }
    let mut chars = name.chars();
    let first = chars.next().unwrap_or('-');
    if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
        return Err(
            "must start with a lowercase letter or a digit (pattern ^[a-z0-9][a-z0-9-]*$)".into(),
        );
    }
    if let Some(bad) = chars.find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(format!("must match ^[a-z0-9][a-z0-9-]*$ (found {bad:?})"));
    }
    Ok(())
}

/// The longest version string accepted.
pub const MAX_VERSION_LEN: usize = 64;

/// A version: strict semver (`1.0.0`, `0.1.0-rc.1`), at most [`MAX_VERSION_LEN`] characters; `latest`,
/// ranges and build metadata (`1.0.0+build`, which semver leaves out of a version's identity) are refused.
pub fn validate_version(version: &str) -> std::result::Result<(), String> {
    if version == "latest" {
        return Err("'latest' is not allowed: pin an exact version".into());
    }
    if version.len() > MAX_VERSION_LEN {
        return Err(format!("must be at most {MAX_VERSION_LEN} characters"));
    }
    let parsed = semver::Version::parse(version)
        .map_err(|e| format!("must be a semantic version like 1.0.0 ({e})"))?;
    if !parsed.build.is_empty() {
        return Err(format!(
            "build metadata (+{}) is not part of a version's identity in semver: drop it or use a \
             pre-release (-{})",
            parsed.build, parsed.build
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_refs_with_and_without_org() {
        let r = ArtifactRef::parse("support-agent@1.0.0", "capability").unwrap();
        assert_eq!(
            (r.org, r.name.as_str(), r.version.as_str()),
            (None, "support-agent", "1.0.0")
        );
        let r = ArtifactRef::parse("acme/support-demos@0.1.0", "dataset").unwrap();
        assert_eq!(r.org.as_deref(), Some("acme"));
        assert_eq!(r.to_string(), "acme/support-demos@0.1.0");
    }

    #[test]
    fn refuses_bad_names_versions_and_paths() {
        for bad in [
            "support-agent",
            "support-agent@latest",
            "Support@1.0.0",
            "../etc@1.0.0",
            "a/b/c@1.0.0",
            "/abs@1.0.0",
            "-x@1.0.0",
            "x@1.0",
            "x\0y@1.0.0",
            "@1.0.0",
            "x@1.0.0+build",
        ] {
            let err = ArtifactRef::parse(bad, "capability").unwrap_err();
            assert_eq!(err.field(), "capability", "{bad}");
        }
        let long = format!("x@1.0.0-{}", "a".repeat(60));
        assert!(
            ArtifactRef::parse(&long, "dataset")
                .unwrap_err()
                .to_string()
                .contains("at most 64")
        );
        assert!(
            validate_version("1.0.0+b")
                .unwrap_err()
                .contains("build metadata")
        );
        validate_version(&format!("1.0.0-{}", "a".repeat(58))).unwrap();
    }
}
