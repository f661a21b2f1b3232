//! A typed client of the `dn` HTTP API (the CLI uses it; any Rust program can).
//!
//! The CLI uses it. A create carries an `Idempotency-Key` and is sent again under it after a transport error
//! or a 502/503/504. `sse` reads the log stream, `push` sends multipart pushes (files on disk are streamed
//! from it), and `download_checkpoint` streams each file to `NAME.partial`, renamed when complete.

use std::time::Duration;

use dn_types::{
    CapabilityList, CapabilityManifest, CapabilityPushResult, CheckpointFileList,
    CreateTinkerSftJobRequest, DatasetList, DatasetManifest, DatasetPushResult, ErrorBody,
    HealthResponse, TrainingCatalogResponse, TrainingJob, TrainingJobArtifacts, TrainingJobList,
    TrainingJobLogList,
};
use reqwest::{Method, RequestBuilder, StatusCode};

mod metrics;
mod push;
mod sse;
pub use metrics::MetricsTable;
pub use push::{PushContent, PushFile};
use serde::de::DeserializeOwned;
pub use sse::{LogStream, StreamEvent};

/// The one error type of `dn-client`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server answered with an error status; `detail` is its message.
    #[error("{detail} (HTTP {status})")]
    Api {
        status: StatusCode,
        code: String,
        detail: String,
    },
    #[error("cannot reach the dn server at {url}: {source}")]
    Transport {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("unexpected response from {url}: {message}")]
    Decode { url: String, message: String },
    #[error("invalid server url '{0}'")]
    BadUrl(String),
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Error::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The server could not be reached or said "not now" (502, 503, 504: restarting, or behind a proxy
    /// whose upstream is down): worth retrying, unlike an answer about the request itself.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Transport { .. } => true,
            Error::Api { status, .. } => matches!(
                *status,
                StatusCode::BAD_GATEWAY
                    | StatusCode::SERVICE_UNAVAILABLE
                    | StatusCode::GATEWAY_TIMEOUT
            ),
            _ => false,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Query of `GET .../training/jobs`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ListJobsQuery {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page_size: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub project_ref: Option<String>,
}

/// Query of `GET /training/catalog`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CatalogQuery {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub family: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    api_key: Option<String>,
}

impl Client {
    /// `server` is the server's address; `/api/v1` is appended unless it already ends with it (as the
    /// reference SDK does).
    pub fn new(server: &str, api_key: Option<&str>) -> Result<Self> {
        let trimmed = server.trim_end_matches('/');
        if !(trimmed.starts_with("http://") || trimmed.starts_with("https://")) {
            return Err(Error::BadUrl(server.to_owned()));
        }
        let base = if trimmed.ends_with("/api/v1") {
            trimmed.to_owned()
        } else {
            format!("{trimmed}/api/v1")
        };
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            // A silent server fails a request; a long transfer that keeps moving (a large push or
            // checkpoint download) is not cut off.
            .read_timeout(Duration::from_secs(300))
            .build()
            .map_err(|source| Error::Transport {
                url: base.clone(),
                source,
            })?;
        Ok(Client {
            http,
            base,
            api_key: api_key.map(str::to_owned),
        })
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let builder = self.http.request(method, format!("{}{path}", self.base));
        match &self.api_key {
            Some(key) => builder.header("X-API-Key", key),
            None => builder,
        }
    }

    /// Sends a request; the response of a success (body unread), or the server's error as
    /// [`Error::Api`].
    async fn execute(&self, builder: RequestBuilder) -> Result<(String, reqwest::Response)> {
        let request = builder.build().map_err(|source| Error::Transport {
            url: self.base.clone(),
            source,
        })?;
        let url = request.url().to_string();
        let response = self
            .http
            .execute(request)
            .await
            .map_err(|source| Error::Transport {
                url: url.clone(),
                source,
            })?;
        if response.status().is_success() {
            return Ok((url, response));
        }
        let status = response.status();
        let bytes = response.bytes().await.map_err(|source| Error::Transport {
            url: url.clone(),
            source,
        })?;
        let (code, detail) = match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(body) => (body.code, body.detail),
            Err(_) => (
                "unknown".into(),
                String::from_utf8_lossy(&bytes).into_owned(),
            ),
        };
        Err(Error::Api {
            status,
            code,
            detail,
        })
    }

    /// Sends a request; the body of a success, or the server's error as [`Error::Api`].
    async fn send_raw(&self, builder: RequestBuilder) -> Result<(String, bytes::Bytes)> {
        let (url, response) = self.execute(builder).await?;
        let bytes = response.bytes().await.map_err(|source| Error::Transport {
            url: url.clone(),
            source,
        })?;
        Ok((url, bytes))
    }

    async fn send<T: DeserializeOwned>(&self, builder: RequestBuilder) -> Result<T> {
        let (url, bytes) = self.send_raw(builder).await?;
        serde_json::from_slice(&bytes).map_err(|e| Error::Decode {
            url,
            message: e.to_string(),
        })
    }

    fn jobs_path(org: &str, ws: &str) -> String {
        format!("/org/{org}/ws/{ws}/training/jobs")
    }

    pub async fn health(&self) -> Result<HealthResponse> {
        self.send(self.request(Method::GET, "/health")).await
    }

    /// Creates a job. The request carries an `Idempotency-Key`, and is sent again under the same key when
    /// the server could not be reached or answered 502/503/504 (at most 4 more times, within about 15 s):
    /// a create that reached the server before the connection dropped makes one job, not two.
    pub async fn create_job(
        &self,
        org: &str,
        ws: &str,
        request: &CreateTinkerSftJobRequest,
    ) -> Result<TrainingJob> {
        let key = uuid::Uuid::new_v4().to_string();
        let mut pause = std::time::Duration::from_millis(500);
        let mut resends = 0;
        loop {
            let sent = self
                .send(
                    self.request(Method::POST, &Self::jobs_path(org, ws))
                        .header("Idempotency-Key", &key)
                        .json(request),
                )
                .await;
            match sent {
                Err(e) if e.is_transient() && resends < 4 => {
                    resends += 1;
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(std::time::Duration::from_secs(5));
                }
                other => return other,
            }
        }
    }

    pub async fn list_jobs(
        &self,
        org: &str,
        ws: &str,
        query: &ListJobsQuery,
    ) -> Result<TrainingJobList> {
        self.send(
            self.request(Method::GET, &Self::jobs_path(org, ws))
                .query(query),
        )
        .await
    }

    pub async fn get_job(&self, org: &str, ws: &str, id: &str) -> Result<TrainingJob> {
        let path = format!("{}/{id}", Self::jobs_path(org, ws));
        self.send(self.request(Method::GET, &path)).await
    }

    pub async fn cancel_job(&self, org: &str, ws: &str, id: &str) -> Result<TrainingJob> {
        let path = format!("{}/{id}/cancel", Self::jobs_path(org, ws));
        self.send(self.request(Method::POST, &path)).await
    }

    pub async fn retry_job(&self, org: &str, ws: &str, id: &str) -> Result<TrainingJob> {
        let path = format!("{}/{id}/retry", Self::jobs_path(org, ws));
        self.send(self.request(Method::POST, &path)).await
    }

    /// Log entries after position `after` (0 for all).
    pub async fn job_logs(
        &self,
        org: &str,
        ws: &str,
        id: &str,
        after: i64,
    ) -> Result<TrainingJobLogList> {
        let path = format!("{}/{id}/logs", Self::jobs_path(org, ws));
        self.send(self.request(Method::GET, &path).query(&[("after", after)]))
            .await
    }

    /// The job's log entries after position `after` as they happen (server-sent events); see
    /// [`LogStream`]. Reconnect with the id of the last event seen to continue without gaps.
    pub async fn log_stream(&self, org: &str, ws: &str, id: &str, after: i64) -> Result<LogStream> {
        let path = format!("{}/{id}/logs/stream", Self::jobs_path(org, ws));
        let builder = self
            .request(Method::GET, &path)
            .header("Accept", "text/event-stream")
            .header("Last-Event-ID", after.to_string());
        let (url, response) = self.execute(builder).await?;
        Ok(LogStream::new(url, response))
    }

    pub async fn job_artifacts(
        &self,
        org: &str,
        ws: &str,
        id: &str,
    ) -> Result<TrainingJobArtifacts> {
        let path = format!("{}/{id}/artifacts", Self::jobs_path(org, ws));
        self.send(self.request(Method::GET, &path)).await
    }

    /// The files of a committed checkpoint (`step-NNNNNN` or `final`) of a job.
    pub async fn checkpoint_files(
        &self,
        org: &str,
        ws: &str,
        id: &str,
        name: &str,
    ) -> Result<CheckpointFileList> {
        let path = format!("{}/{id}/checkpoints/{name}", Self::jobs_path(org, ws));
        self.send(self.request(Method::GET, &path)).await
    }

    /// Downloads every file of a committed checkpoint into `dest` (created if needed), streaming each to
    /// disk (`NAME.partial`, renamed when complete). Returns the files written.
    pub async fn download_checkpoint(
        &self,
        org: &str,
        ws: &str,
        id: &str,
        name: &str,
        dest: &std::path::Path,
    ) -> Result<Vec<std::path::PathBuf>> {
        use tokio::io::AsyncWriteExt;
        let listing = self.checkpoint_files(org, ws, id, name).await?;
        let write_error = |path: &std::path::Path| {
            let path = path.display().to_string();
            move |source| Error::Write { path, source }
        };
        tokio::fs::create_dir_all(dest)
            .await
            .map_err(write_error(dest))?;
        let mut written = Vec::new();
        for file in &listing.files {
            let url_path = format!(
                "{}/{id}/checkpoints/{name}/files/{}",
                Self::jobs_path(org, ws),
                file.path
            );
            // The server lists plain file names only; refuse anything else rather than write outside dest.
            if file.path.contains(['/', '\\']) || file.path.starts_with('.') {
                return Err(Error::Decode {
                    url: url_path,
                    message: format!("unexpected file name {:?}", file.path),
                });
            }
            let (url, mut response) = self.execute(self.request(Method::GET, &url_path)).await?;
            let target = dest.join(&file.path);
            let partial = dest.join(format!("{}.partial", file.path));
            let mut out = tokio::fs::File::create(&partial)
                .await
                .map_err(write_error(&partial))?;
            while let Some(chunk) = response.chunk().await.map_err(|source| Error::Transport {
                url: url.clone(),
                source,
            })? {
                out.write_all(&chunk).await.map_err(write_error(&partial))?;
            }
            out.flush().await.map_err(write_error(&partial))?;
            tokio::fs::rename(&partial, &target)
                .await
                .map_err(write_error(&target))?;
            written.push(target);
        }
        Ok(written)
    }

    pub async fn catalog(&self, query: &CatalogQuery) -> Result<TrainingCatalogResponse> {
        self.send(self.request(Method::GET, "/training/catalog").query(query))
            .await
    }

    pub async fn push_dataset(&self, org: &str, files: Vec<PushFile>) -> Result<DatasetPushResult> {
        let path = format!("/org/{org}/datasets");
        self.send(
            self.request(Method::POST, &path)
                .multipart(push::multipart(files).await?),
        )
        .await
    }

    pub async fn list_datasets(&self, org: &str) -> Result<DatasetList> {
        self.send(self.request(Method::GET, &format!("/org/{org}/datasets")))
            .await
    }

    pub async fn get_dataset(
        &self,
        org: &str,
        name: &str,
        version: &str,
    ) -> Result<DatasetManifest> {
        let path = format!("/org/{org}/datasets/{name}/{version}");
        self.send(self.request(Method::GET, &path)).await
    }

    /// The bytes of one file of a pushed dataset version.
    pub async fn dataset_file(
        &self,
        org: &str,
        name: &str,
        version: &str,
        path: &str,
    ) -> Result<Vec<u8>> {
        let route = format!("/org/{org}/datasets/{name}/{version}/files/{path}");
        let (_, bytes) = self.send_raw(self.request(Method::GET, &route)).await?;
        Ok(bytes.to_vec())
    }

    pub async fn push_capability(
        &self,
        org: &str,
        files: Vec<PushFile>,
    ) -> Result<CapabilityPushResult> {
        let path = format!("/org/{org}/capabilities");
        self.send(
            self.request(Method::POST, &path)
                .multipart(push::multipart(files).await?),
        )
        .await
    }

    pub async fn list_capabilities(&self, org: &str) -> Result<CapabilityList> {
        self.send(self.request(Method::GET, &format!("/org/{org}/capabilities")))
            .await
    }

    pub async fn get_capability(
        &self,
        org: &str,
        name: &str,
        version: &str,
    ) -> Result<CapabilityManifest> {
        let path = format!("/org/{org}/capabilities/{name}/{version}");
        self.send(self.request(Method::GET, &path)).await
    }
}
