//! `dn dataset ...` and `dn capability ...`: push, list, show.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use dn_client::PushFile;
use dn_types::{ArtifactKind, ArtifactRef};

use crate::cli::RegistryCommand;
use crate::connection::Connection;
use crate::output::print_json;

/// Every regular file under `root` (hidden files and directories skipped), with `/`-separated relative paths.
/// Only what is inside the directory is pushed: a symbolic link (to a file anywhere, such as /etc/passwd) or
/// another special file is refused, naming it.
fn collect_files(root: &Path) -> Result<Vec<PushFile>> {
    let mut files = Vec::new();
    let mut pending: Vec<PathBuf> = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries =
            std::fs::read_dir(&dir).with_context(|| format!("cannot read {}", dir.display()))?;
        for entry in entries {
            let entry = entry?;
            let path = entry.path();
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            // The entry itself, not what a link points to.
            let kind = entry
                .file_type()
                .with_context(|| format!("cannot read {}", path.display()))?;
            if kind.is_symlink() {
                bail!(
                    "{} is a symbolic link: dn pushes only regular files inside the directory (copy the \
                     file in instead)",
                    path.display()
                );
            }
            if kind.is_dir() {
                pending.push(path);
            } else if !kind.is_file() {
                bail!(
                    "{} is not a regular file (a pipe, socket or device): dn pushes only regular files",
                    path.display()
                );
            } else {
                let relative = path
                    .strip_prefix(root)
                    .expect("walked paths are under root")
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join("/");
                files.push(PushFile::file(relative, path));
            }
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

/// A single data file pushed as a dataset: `dataset.yaml` is written for it.
fn single_file_dataset(path: &Path, name: &str, version: &str) -> Result<Vec<PushFile>> {
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .context("the dataset file has no name")?;
    let format = match path.extension().and_then(|e| e.to_str()) {
        Some(ext @ ("jsonl" | "json" | "parquet" | "csv" | "arrow")) => ext.to_owned(),
        other => bail!(
            "{}: cannot tell the format from the extension {:?}; use .jsonl, .json, .parquet, .csv or .arrow",
            path.display(),
            other.unwrap_or("")
        ),
    };
    let yaml =
        format!("name: {name}\nversion: {version}\nformat: {format}\nfiles:\n  - {file_name}\n");
    Ok(vec![
        PushFile::bytes("dataset.yaml", yaml),
        PushFile::file(file_name, path),
    ])
}

/// What a push did.
pub struct Pushed {
    pub created: bool,
    /// `org/name@version`.
    pub reference: String,
    pub version_ref: String,
    pub digest: String,
    pub value: serde_json::Value,
}

/// Pushes a directory (or, for datasets, a single file with `name` and `version`).
pub async fn push_path(
    client: &dn_client::Client,
    org: &str,
    kind: ArtifactKind,
    path: &Path,
    name: Option<String>,
    version: Option<String>,
) -> Result<Pushed> {
    let files = if path.is_dir() {
        if name.is_some() || version.is_some() {
            bail!(
                "--name and --version are for a single data file; a directory's {} names it",
                if kind == ArtifactKind::Dataset {
                    "dataset.yaml"
                } else {
                    "capability.yaml"
                }
            );
        }
        collect_files(path)?
    } else if path.is_file() {
        if kind == ArtifactKind::Capability {
            bail!(
                "{}: a capability is a directory with capability.yaml and agents/*.md",
                path.display()
            );
        }
        let (Some(name), Some(version)) = (name, version) else {
            bail!(
                "{}: pushing a single data file needs --name and --version",
                path.display()
            );
        };
        single_file_dataset(path, &name, &version)?
    } else {
        bail!("{}: no such file or directory", path.display());
    };
    let (created, reference, digest, value) = match kind {
        ArtifactKind::Dataset => {
            let r = client.push_dataset(org, files).await?;
            let m = &r.manifest;
            (
                r.created,
                format!("{}/{}@{}", m.organization_id, m.name, m.version),
                m.digest.clone(),
                serde_json::to_value(&r)?,
            )
        }
        ArtifactKind::Capability => {
            let r = client.push_capability(org, files).await?;
            let m = &r.manifest;
            (
                r.created,
                format!("{}/{}@{}", m.organization_id, m.name, m.version),
                m.digest.clone(),
                serde_json::to_value(&r)?,
            )
        }
    };
    let version_ref = reference
        .split_once('/')
        .map_or(reference.clone(), |(_, rest)| rest.to_owned());
    Ok(Pushed {
        created,
        reference,
        version_ref,
        digest,
        value,
    })
}

pub async fn run(
    kind: ArtifactKind,
    command: RegistryCommand,
    conn: &Connection,
    json: bool,
) -> Result<i32> {
    let client = conn.client()?;
    let org = conn.organization.as_str();
    match command {
        RegistryCommand::Push {
            path,
            name,
            version,
        } => {
            let pushed = push_path(&client, org, kind, &path, name, version).await?;
            if json {
                print_json(&pushed.value)?;
            } else if pushed.created {
                println!("pushed {kind} {} {}", pushed.reference, pushed.digest);
            } else {
                println!(
                    "{kind} {} already exists with the same content {}",
                    pushed.reference, pushed.digest
                );
            }
        }
        RegistryCommand::List => {
            let rows: Vec<(String, String, String)> = match kind {
                ArtifactKind::Dataset => {
                    let list = client.list_datasets(org).await?;
                    if json {
                        return print_json(&list).map(|_| 0);
                    }
                    list.items
                        .iter()
                        .map(|m| {
                            (
                                format!("{}@{}", m.name, m.version),
                                m.format.to_string(),
                                m.digest.clone(),
                            )
                        })
                        .collect()
                }
                ArtifactKind::Capability => {
                    let list = client.list_capabilities(org).await?;
                    if json {
                        return print_json(&list).map(|_| 0);
                    }
                    list.items
                        .iter()
                        .map(|m| {
                            (
                                format!("{}@{}", m.name, m.version),
                                m.description.clone(),
                                m.digest.clone(),
                            )
                        })
                        .collect()
                }
            };
            for (reference, about, digest) in rows {
                println!("{reference} {about} {digest}");
            }
        }
        RegistryCommand::Show { reference } => {
            let r = ArtifactRef::parse(&reference, kind.as_str())?;
            let owner = r.org_or(org);
            match kind {
                ArtifactKind::Dataset => {
                    print_json(&client.get_dataset(owner, &r.name, &r.version).await?)?
                }
                ArtifactKind::Capability => {
                    print_json(&client.get_capability(owner, &r.name, &r.version).await?)?
                }
            }
        }
    }
    Ok(0)
}
