//! [`Registry`]: push, fetch and list manifests and files over an `object_store`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dn_types::{ArtifactKind, CapabilityManifest, DatasetManifest, FileEntry, PushResult};
use futures::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as StorePath;
use object_store::{BackoffConfig, ObjectStore, PutMode, PutOptions, PutPayload, RetryConfig};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::runs::ByteStream;
use crate::upload::{FileContent, Upload};

/// Where the registry keeps its objects.
#[derive(Debug, Clone, PartialEq)]
pub enum StorageConfig {
    /// A local directory (the embedded default: `<data-dir>/storage`).
    Local { root: PathBuf },
    /// An S3-compatible bucket. Credentials come from `credentials` when given, else from the usual
    /// `AWS_*` environment variables (or the instance's role).
    S3 {
        bucket: String,
        endpoint: Option<String>,
        region: Option<String>,
        allow_http: bool,
        credentials: Option<S3Credentials>,
        /// How long a request is retried while the bucket is unreachable or answers 5xx (a storage blip
        /// shorter than this costs nothing); past it, the call fails with the last error.
        retry_timeout: Duration,
    },
}

/// How long S3 requests are retried by default (`storage.s3_retry_seconds`).
pub const DEFAULT_S3_RETRY_TIMEOUT: Duration = Duration::from_secs(60);

/// A static S3 access key; `Debug` does not show the secret.
#[derive(Clone, PartialEq)]
pub struct S3Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl std::fmt::Debug for S3Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"***")
            .finish()
    }
}

/// The dataset and capability registries over one object store.
#[derive(Debug, Clone)]
pub struct Registry {
    pub(crate) store: Arc<dyn ObjectStore>,
    max_upload_bytes: u64,
    /// What object keys are relative to: an absolute directory, or `s3://bucket`.
    pub(crate) location: String,
    /// Local storage: URIs are keys relative to its root (a node's absolute paths stay off the API).
    pub(crate) local: bool,
}

/// What the registry needs to know of a manifest type.
trait Manifest: Serialize + DeserializeOwned {
    const KIND: ArtifactKind;
    fn digest(&self) -> &str;
    fn files(&self) -> &[FileEntry];
    fn name_version(&self) -> (&str, &str);
    fn org(&self) -> &str;
}

impl Manifest for DatasetManifest {
    const KIND: ArtifactKind = ArtifactKind::Dataset;
    fn digest(&self) -> &str {
        &self.digest
    }
    fn files(&self) -> &[FileEntry] {
        &self.files
    }
    fn name_version(&self) -> (&str, &str) {
        (&self.name, &self.version)
    }
    fn org(&self) -> &str {
        &self.organization_id
    }
}

impl Manifest for CapabilityManifest {
    const KIND: ArtifactKind = ArtifactKind::Capability;
    fn digest(&self) -> &str {
        &self.digest
    }
    fn files(&self) -> &[FileEntry] {
        &self.files
    }
    fn name_version(&self) -> (&str, &str) {
        (&self.name, &self.version)
    }
    fn org(&self) -> &str {
        &self.organization_id
    }
}

fn kind_prefix(kind: ArtifactKind) -> &'static str {
    match kind {
        ArtifactKind::Dataset => "datasets",
        ArtifactKind::Capability => "capabilities",
    }
}

/// Callers validate names first (`dn_types::validate_name`); keys only ever hold `[a-z0-9-.+]`.
fn manifest_key(kind: ArtifactKind, org: &str, name: &str, version: &str) -> StorePath {
    StorePath::from(format!("{}/{org}/{name}/{version}.json", kind_prefix(kind)))
}

fn blob_key(sha256_id: &str) -> StorePath {
    let hex = sha256_id.trim_start_matches("sha256:");
    StorePath::from(format!("blobs/sha256/{hex}"))
}

fn display_ref(org: &str, name: &str, version: &str) -> String {
    format!("{org}/{name}@{version}")
}

impl Registry {
    /// A registry over `store` (tests: a store that fails on demand).
    #[cfg(test)]
    pub(crate) fn with_store(store: Arc<dyn ObjectStore>) -> Self {
        Registry {
            store,
            max_upload_bytes: u64::MAX,
            location: "memory".into(),
            local: false,
        }
    }

    pub fn new(config: &StorageConfig, max_upload_bytes: u64) -> Result<Self> {
        let (store, location): (Arc<dyn ObjectStore>, String) = match config {
            StorageConfig::Local { root } => {
                std::fs::create_dir_all(root).map_err(|e| {
                    Error::Config(format!("cannot create storage dir {}: {e}", root.display()))
                })?;
                let absolute = std::fs::canonicalize(root).map_err(|e| {
                    Error::Config(format!(
                        "cannot resolve storage dir {}: {e}",
                        root.display()
                    ))
                })?;
                let location = absolute.display().to_string();
                (
                    Arc::new(LocalFileSystem::new_with_prefix(absolute)?),
                    location,
                )
            }
            StorageConfig::S3 {
                bucket,
                endpoint,
                region,
                allow_http,
                credentials,
                retry_timeout,
            } => {
                // Retries bounded by time, not by a count of quick tries (ten of which pass in about
                // two seconds of connection refusals): the pauses grow to 5 s.
                let retry = RetryConfig {
                    backoff: BackoffConfig {
                        init_backoff: Duration::from_millis(100),
                        max_backoff: Duration::from_secs(5),
                        base: 2.0,
                    },
                    max_retries: usize::MAX,
                    retry_timeout: *retry_timeout,
                };
                let mut builder = AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    .with_allow_http(*allow_http)
                    .with_retry(retry);
                if let Some(endpoint) = endpoint {
                    builder = builder.with_endpoint(endpoint);
                }
                if let Some(region) = region {
                    builder = builder.with_region(region);
                }
                if let Some(credentials) = credentials {
                    builder = builder
                        .with_access_key_id(&credentials.access_key_id)
                        .with_secret_access_key(&credentials.secret_access_key);
                }
                (Arc::new(builder.build()?), format!("s3://{bucket}"))
            }
        };
        Ok(Registry {
            store,
            max_upload_bytes,
            local: matches!(config, StorageConfig::Local { .. }),
            location,
        })
    }

    /// Whether storage answers a read now (readiness checks): a lookup of a key that does not exist.
    pub async fn check_reachable(&self) -> Result<()> {
        match self.store.head(&StorePath::from("probes/none")).await {
            Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Whether storage takes a write now (a worker deciding whether an outage or a full disk is over):
    /// writes and deletes a small object of its own.
    pub async fn check_writable(&self) -> Result<()> {
        let key = StorePath::from(format!("probes/{}", uuid::Uuid::new_v4().simple()));
        self.store
            .put(&key, PutPayload::from_static(b"probe"))
            .await?;
        self.store.delete(&key).await?;
        Ok(())
    }

    pub fn max_upload_bytes(&self) -> u64 {
        self.max_upload_bytes
    }

    pub fn object_store(&self) -> Arc<dyn ObjectStore> {
        self.store.clone()
    }

    pub async fn push_dataset(
        &self,
        org: &str,
        upload: &Upload,
    ) -> Result<PushResult<DatasetManifest>> {
        let manifest = crate::dataset::parse_dataset(upload, org)?;
        self.push(org, upload, manifest).await
    }

    pub async fn push_capability(
        &self,
        org: &str,
        upload: &Upload,
    ) -> Result<PushResult<CapabilityManifest>> {
        let manifest = crate::capability::parse_capability(upload, org)?;
        self.push(org, upload, manifest).await
    }

    pub async fn dataset(&self, org: &str, name: &str, version: &str) -> Result<DatasetManifest> {
        self.manifest(org, name, version).await
    }

    pub async fn capability(
        &self,
        org: &str,
        name: &str,
        version: &str,
    ) -> Result<CapabilityManifest> {
        self.manifest(org, name, version).await
    }

    pub async fn list_datasets(&self, org: &str) -> Result<Vec<DatasetManifest>> {
        self.list(org).await
    }

    pub async fn list_capabilities(&self, org: &str) -> Result<Vec<CapabilityManifest>> {
        self.list(org).await
    }

    /// One file of a pushed version as a stream, with its size.
    pub async fn file(
        &self,
        kind: ArtifactKind,
        org: &str,
        name: &str,
        version: &str,
        path: &str,
    ) -> Result<(u64, ByteStream)> {
        let found = match kind {
            ArtifactKind::Dataset => {
                let manifest: DatasetManifest = self.manifest(org, name, version).await?;
                self.get_blob(&manifest, path).await?
            }
            ArtifactKind::Capability => {
                let manifest: CapabilityManifest = self.manifest(org, name, version).await?;
                self.get_blob(&manifest, path).await?
            }
        };
        let size = found.meta.size;
        Ok((size, found.into_stream().map_err(Error::from).boxed()))
    }

    /// The bytes of one file of a dataset whose manifest the caller already holds (no manifest re-read).
    pub async fn dataset_file(&self, manifest: &DatasetManifest, path: &str) -> Result<Bytes> {
        self.blob(manifest, path).await
    }

    /// Streams one file of a dataset version into the local file `dest` (never whole in memory).
    pub async fn download_dataset_file(
        &self,
        manifest: &DatasetManifest,
        path: &str,
        dest: &std::path::Path,
    ) -> Result<()> {
        let key = blob_key_of(manifest, path)?;
        self.download_file(&key, dest).await
    }

    async fn blob<M: Manifest>(&self, manifest: &M, path: &str) -> Result<Bytes> {
        Ok(self.get_blob(manifest, path).await?.bytes().await?)
    }

    async fn get_blob<M: Manifest>(
        &self,
        manifest: &M,
        path: &str,
    ) -> Result<object_store::GetResult> {
        let key = blob_key_of(manifest, path)?;
        Ok(self.store.get(&key).await?)
    }

    async fn manifest<M: Manifest>(&self, org: &str, name: &str, version: &str) -> Result<M> {
        let key = manifest_key(M::KIND, org, name, version);
        let bytes = match self.store.get(&key).await {
            Ok(found) => found.bytes().await?,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(Error::NotFound {
                    kind: M::KIND,
                    reference: display_ref(org, name, version),
                });
            }
            Err(e) => return Err(e.into()),
        };
        serde_json::from_slice(&bytes)
            .map_err(|e| Error::invalid(key.to_string(), format!("corrupt manifest: {e}")))
    }

    async fn list<M: Manifest>(&self, org: &str) -> Result<Vec<M>> {
        let prefix = StorePath::from(format!("{}/{org}", kind_prefix(M::KIND)));
        let metas: Vec<_> = self.store.list(Some(&prefix)).try_collect().await?;
        let mut items = Vec::new();
        for meta in metas
            .iter()
            .filter(|m| m.location.as_ref().ends_with(".json"))
        {
            let bytes = self.store.get(&meta.location).await?.bytes().await?;
            let manifest: M = serde_json::from_slice(&bytes).map_err(|e| {
                Error::invalid(meta.location.to_string(), format!("corrupt manifest: {e}"))
            })?;
            items.push(manifest);
        }
        items.sort_by(|a: &M, b: &M| {
            let (an, av) = a.name_version();
            let (bn, bv) = b.name_version();
            let parse = |v: &str| semver::Version::parse(v).ok();
            an.cmp(bn).then_with(|| parse(av).cmp(&parse(bv)))
        });
        Ok(items)
    }

    async fn push<M: Manifest>(
        &self,
        org: &str,
        upload: &Upload,
        manifest: M,
    ) -> Result<PushResult<M>> {
        let (name, version) = manifest.name_version();
        let reference = display_ref(org, name, version);
        if let Some(existing) = self
            .existing::<M>(org, name, version, &manifest, &reference)
            .await?
        {
            return Ok(existing);
        }
        for (file, entry) in upload.files().iter().zip(manifest.files()) {
            let key = blob_key(&entry.sha256);
            match self.store.head(&key).await {
                Ok(_) => continue,
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
            match &file.content {
                FileContent::Memory(bytes) => {
                    self.store
                        .put(&key, PutPayload::from(bytes.clone()))
                        .await?;
                }
                FileContent::Spooled { file, .. } => self.upload_file(file, key).await?,
            }
        }
        let key = manifest_key(M::KIND, org, name, version);
        let body = serde_json::to_vec_pretty(&manifest).expect("manifests serialize");
        let create = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self
            .store
            .put_opts(&key, PutPayload::from(body.clone()), create)
            .await
        {
            Ok(_) => Ok(PushResult {
                created: true,
                manifest,
            }),
            // Another push won the race: same content is fine, different content is a conflict.
            Err(object_store::Error::AlreadyExists { .. }) => self
                .existing::<M>(org, name, version, &manifest, &reference)
                .await?
                .ok_or_else(|| Error::Config(format!("manifest of {reference} vanished"))),
            // Stores without conditional writes: the existence check above is the guard.
            Err(object_store::Error::NotImplemented) => {
                self.store.put(&key, PutPayload::from(body)).await?;
                Ok(PushResult {
                    created: true,
                    manifest,
                })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// `Some(result)` if the version exists with the same content, `Conflict` if with different content.
    async fn existing<M: Manifest>(
        &self,
        org: &str,
        name: &str,
        version: &str,
        new: &M,
        reference: &str,
    ) -> Result<Option<PushResult<M>>> {
        match self.manifest::<M>(org, name, version).await {
            Ok(existing) if existing.digest() == new.digest() => Ok(Some(PushResult {
                created: false,
                manifest: existing,
            })),
            Ok(existing) => Err(Error::Conflict {
                kind: M::KIND,
                reference: reference.to_owned(),
                existing: existing.digest().to_owned(),
            }),
            Err(Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// The storage key of one file of a manifest (an error naming the file when it has none).
fn blob_key_of<M: Manifest>(manifest: &M, path: &str) -> Result<StorePath> {
    let entry = manifest
        .files()
        .iter()
        .find(|f| f.path == path)
        .ok_or_else(|| {
            let (name, version) = manifest.name_version();
            Error::FileNotFound {
                kind: M::KIND,
                reference: display_ref(manifest.org(), name, version),
                path: path.to_owned(),
            }
        })?;
    Ok(blob_key(&entry.sha256))
}
