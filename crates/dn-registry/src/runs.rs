//! What jobs leave in storage: checkpoints (PEFT adapter + trainer state) under
//! `jobs/<org>/<job id>/checkpoints/<name>/`, each committed by a `_COMMITTED` marker written last, so a
//! reader (or a worker resuming the job) never takes a half-uploaded checkpoint for a complete one.
//! Files stream both ways (see `transfer`), so no whole file is held in memory.

use std::path::Path;

use bytes::Bytes;
use dn_types::{CheckpointFile, CheckpointFileList};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as StorePath;
use object_store::{ObjectMeta, ObjectStore, PutPayload};

use crate::error::{Error, Result};
use crate::storage::Registry;
use crate::upload::validate_relative_path;

/// The object written last into a checkpoint's prefix.
pub const COMMIT_MARKER: &str = "_COMMITTED";

/// A stream of one stored file's bytes.
pub type ByteStream = BoxStream<'static, Result<Bytes>>;

impl Registry {
    /// The URI of an object key as jobs report it: `s3://bucket/key`, or for local storage the key itself,
    /// relative to the storage directory (no node's absolute path reaches the API).
    pub fn uri(&self, key: &str) -> String {
        if self.local {
            return key.to_owned();
        }
        format!("{}/{key}", self.location.trim_end_matches('/'))
    }

    /// Where the storage is: the directory, or `s3://bucket` (for the server's own log).
    pub fn location(&self) -> &str {
        &self.location
    }

    /// The key prefix of a job's checkpoint.
    pub fn checkpoint_prefix(org: &str, job_id: &str, name: &str) -> String {
        format!("jobs/{org}/{job_id}/checkpoints/{name}")
    }

    /// Uploads every file of a complete local checkpoint directory, then the commit marker. Returns the
    /// checkpoint's URI.
    pub async fn put_checkpoint(
        &self,
        org: &str,
        job_id: &str,
        name: &str,
        dir: &Path,
    ) -> Result<String> {
        self.upload_checkpoint_files(org, job_id, name, dir).await?;
        self.commit_checkpoint(org, job_id, name).await
    }

    /// The first half of [`Registry::put_checkpoint`]: every file, no marker (readers ignore it until
    /// [`Registry::commit_checkpoint`]).
    pub async fn upload_checkpoint_files(
        &self,
        org: &str,
        job_id: &str,
        name: &str,
        dir: &Path,
    ) -> Result<()> {
        let prefix = checked_prefix(org, job_id, name)?;
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .map_err(|e| Error::Config(format!("cannot read checkpoint {}: {e}", dir.display())))?
            .filter_map(|entry| entry.ok())
            .filter(|entry| entry.file_type().is_ok_and(|t| t.is_file()))
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        for file in &files {
            let key = StorePath::from(format!("{prefix}{file}"));
            self.upload_file(&dir.join(file), key).await?;
        }
        Ok(())
    }

    /// Writes the commit marker of an uploaded checkpoint; returns the checkpoint's URI.
    pub async fn commit_checkpoint(&self, org: &str, job_id: &str, name: &str) -> Result<String> {
        let prefix = checked_prefix(org, job_id, name)?;
        let marker = StorePath::from(format!("{prefix}{COMMIT_MARKER}"));
        self.store
            .put(&marker, PutPayload::from_static(b""))
            .await?;
        Ok(self.uri(prefix.trim_end_matches('/')))
    }

    /// Deletes a checkpoint: its marker first (so no reader takes it for complete any more), then its
    /// files.
    pub async fn delete_checkpoint(&self, org: &str, job_id: &str, name: &str) -> Result<()> {
        let prefix = checked_prefix(org, job_id, name)?;
        let marker = StorePath::from(format!("{prefix}{COMMIT_MARKER}"));
        let mut keys = vec![marker];
        keys.extend(
            self.list_prefix(&prefix)
                .await?
                .into_iter()
                .map(|m| m.location),
        );
        for key in keys {
            match self.store.delete(&key).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// The names of a job's committed checkpoints (`step-NNNNNN` in step order, then `final`).
    pub async fn committed_checkpoints(&self, org: &str, job_id: &str) -> Result<Vec<String>> {
        for part in [org, job_id] {
            validate_relative_path(part)?;
        }
        let prefix = format!("jobs/{org}/{job_id}/checkpoints/");
        let metas = self.list_prefix(&prefix).await?;
        let mut names: Vec<String> = metas
            .iter()
            .filter_map(|m| {
                let rest = m.location.as_ref().strip_prefix(prefix.as_str())?;
                let (name, file) = rest.split_once('/')?;
                (file == COMMIT_MARKER).then(|| name.to_owned())
            })
            .collect();
        // Zero-padded step numbers sort as text; `final` goes last.
        names.sort_by_key(|n| (n == "final", n.clone()));
        Ok(names)
    }

    /// Downloads a committed checkpoint's files (not the marker) into `dest`.
    pub async fn get_checkpoint(
        &self,
        org: &str,
        job_id: &str,
        name: &str,
        dest: &Path,
    ) -> Result<()> {
        let (prefix, metas) = self.committed_checkpoint_objects(org, job_id, name).await?;
        tokio::fs::create_dir_all(dest)
            .await
            .map_err(|e| Error::Config(format!("cannot create {}: {e}", dest.display())))?;
        for (file, meta) in files_in(&prefix, &metas) {
            validate_relative_path(file)?;
            self.download_file(&meta.location, &dest.join(file)).await?;
        }
        Ok(())
    }

    /// The files of a committed checkpoint (not the marker), by name.
    pub async fn checkpoint_files(
        &self,
        org: &str,
        job_id: &str,
        name: &str,
    ) -> Result<CheckpointFileList> {
        let (prefix, metas) = self.committed_checkpoint_objects(org, job_id, name).await?;
        let mut files: Vec<CheckpointFile> = files_in(&prefix, &metas)
            .map(|(file, meta)| CheckpointFile {
                path: file.to_owned(),
                size_bytes: meta.size,
            })
            .collect();
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(CheckpointFileList {
            name: name.to_owned(),
            files,
        })
    }

    /// One file of a committed checkpoint as a stream, with its size.
    pub async fn checkpoint_file(
        &self,
        org: &str,
        job_id: &str,
        name: &str,
        file: &str,
    ) -> Result<(u64, ByteStream)> {
        let not_found = || Error::CheckpointNotFound {
            job_id: job_id.to_owned(),
            name: name.to_owned(),
            file: Some(file.to_owned()),
        };
        let (prefix, metas) = self.committed_checkpoint_objects(org, job_id, name).await?;
        let (_, meta) = files_in(&prefix, &metas)
            .find(|(listed, _)| *listed == file)
            .ok_or_else(not_found)?;
        let found = match self.store.get(&meta.location).await {
            Ok(found) => found,
            Err(object_store::Error::NotFound { .. }) => return Err(not_found()),
            Err(e) => return Err(e.into()),
        };
        let size = found.meta.size;
        Ok((size, found.into_stream().map_err(Error::from).boxed()))
    }

    /// A checkpoint's prefix and the objects under it; `CheckpointNotFound` unless its marker is there
    /// (or when a part of the name is not a safe path component).
    async fn committed_checkpoint_objects(
        &self,
        org: &str,
        job_id: &str,
        name: &str,
    ) -> Result<(String, Vec<ObjectMeta>)> {
        let not_found = || Error::CheckpointNotFound {
            job_id: job_id.to_owned(),
            name: name.to_owned(),
            file: None,
        };
        let prefix = checked_prefix(org, job_id, name).map_err(|_| not_found())?;
        let metas = self.list_prefix(&prefix).await?;
        let committed = metas
            .iter()
            .any(|m| m.location.as_ref().strip_prefix(prefix.as_str()) == Some(COMMIT_MARKER));
        if committed {
            Ok((prefix, metas))
        } else {
            Err(not_found())
        }
    }

    async fn list_prefix(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        Ok(self
            .store
            .list(Some(&StorePath::from(prefix)))
            .try_collect()
            .await?)
    }
}

/// `jobs/<org>/<job>/checkpoints/<name>/`, once each part is checked to be a safe path component.
fn checked_prefix(org: &str, job_id: &str, name: &str) -> Result<String> {
    for part in [org, job_id, name] {
        validate_relative_path(part)?;
    }
    Ok(format!(
        "{}/",
        Registry::checkpoint_prefix(org, job_id, name)
    ))
}

/// The checkpoint's own files among the objects under its prefix (not the marker, nothing nested), by
/// file name.
fn files_in<'a>(
    prefix: &'a str,
    metas: &'a [ObjectMeta],
) -> impl Iterator<Item = (&'a str, &'a ObjectMeta)> {
    metas.iter().filter_map(move |meta| {
        let file = meta.location.as_ref().strip_prefix(prefix)?;
        (file != COMMIT_MARKER && !file.contains('/')).then_some((file, meta))
    })
}
