//! MLflow's REST API (`/api/2.0/mlflow/...` and the tracking server's artifact proxy
//! `/api/2.0/mlflow-artifacts/artifacts/...`), each call classified as worth retrying (the server is down,
//! slow, overloaded) or refused (it answered no: retrying would not change it).

use std::path::Path;
use std::time::Duration;

use reqwest::{Method, Url};
use serde_json::{Value, json};

use super::{MlflowAuth, MlflowSettings};

/// Why a call did not succeed.
#[derive(Debug)]
pub(crate) enum CallError {
    /// No answer, a timeout, 429 or a 5xx: the same call may succeed later.
    Retryable(String),
    /// A 4xx answer (`error_code` as MLflow names it, and its message).
    Refused { code: String, message: String },
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Retryable(e) => f.write_str(e),
            CallError::Refused { code, message } => write!(f, "{code}: {message}"),
        }
    }
}

/// The run a job reports to.
#[derive(Debug, Clone)]
pub(crate) struct RunHandle {
    pub id: String,
    /// `RUNNING`, `FINISHED`, `FAILED`, `KILLED` or `SCHEDULED` when found.
    pub status: String,
    /// `<experiment>/<run>/artifacts` under the artifact proxy; `Err(uri)` when the run's artifacts live
    /// elsewhere (`s3://`, `file://`), where dn does not upload.
    pub artifact_root: Result<String, String>,
}

pub(crate) struct Client {
    http: reqwest::Client,
    base: Url,
    auth: Option<MlflowAuth>,
    /// One API call's limit; an upload gets more for its size.
    timeout: Duration,
}

/// The slowest upload rate an artifact upload is given time for, past the call's own limit.
const SLOWEST_UPLOAD_BYTES_PER_SECOND: u64 = 1 << 20;

impl Client {
    pub fn new(settings: &MlflowSettings) -> Result<Client, String> {
        let http = reqwest::Client::builder()
            .connect_timeout(settings.request_timeout)
            .danger_accept_invalid_certs(settings.insecure_tls)
            .build()
            .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
        Ok(Client {
            http,
            base: settings.tracking_uri.clone(),
            auth: settings.auth.clone(),
            timeout: settings.request_timeout,
        })
    }

    /// `base` joined with `segments` (each one percent-encoded as a path segment).
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty();
            for segment in segments {
                path.extend(segment.split('/').filter(|s| !s.is_empty()));
            }
        }
        url
    }

    fn request(&self, method: Method, url: Url) -> reqwest::RequestBuilder {
        let request = self.http.request(method, url).timeout(self.timeout);
        match &self.auth {
            Some(MlflowAuth::Basic { username, password }) => {
                request.basic_auth(username, Some(password))
            }
            Some(MlflowAuth::Bearer(token)) => request.bearer_auth(token),
            None => request,
        }
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<Value, CallError> {
        let response = request
            .send()
            .await
            .map_err(|e| CallError::Retryable(describe(&e)))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| CallError::Retryable(describe(&e)))?;
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(body);
        }
        let message = body["message"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| text.chars().take(300).collect());
        if status.as_u16() == 429 || status.is_server_error() {
            return Err(CallError::Retryable(format!("HTTP {status}: {message}")));
        }
        let code = body["error_code"]
            .as_str()
            .map_or_else(|| format!("HTTP {status}"), str::to_owned);
        Err(CallError::Refused { code, message })
    }

    async fn post(&self, endpoint: &str, body: Value) -> Result<Value, CallError> {
        let url = self.url(&["api/2.0/mlflow", endpoint]);
        self.send(self.request(Method::POST, url).json(&body)).await
    }

    /// The experiment named `name`, created if missing; its id.
    pub async fn experiment(&self, name: &str) -> Result<String, CallError> {
        let mut url = self.url(&["api/2.0/mlflow/experiments/get-by-name"]);
        url.query_pairs_mut().append_pair("experiment_name", name);
        let found = self.send(self.request(Method::GET, url.clone())).await;
        let found = match found {
            Err(CallError::Refused { code, .. }) if code == "RESOURCE_DOES_NOT_EXIST" => {
                match self.post("experiments/create", json!({"name": name})).await {
                    Ok(created) => return id_of(&created["experiment_id"], "experiments/create"),
                    // Created meanwhile by another worker.
                    Err(CallError::Refused { code, .. }) if code == "RESOURCE_ALREADY_EXISTS" => {
                        self.send(self.request(Method::GET, url)).await?
                    }
                    Err(e) => return Err(e),
                }
            }
            other => other?,
        };
        id_of(
            &found["experiment"]["experiment_id"],
            "experiments/get-by-name",
        )
    }

    /// The newest run in `experiment` tagged `dn.job_id = job_id`, if any.
    pub async fn find_run(
        &self,
        experiment: &str,
        job_id: &str,
    ) -> Result<Option<RunHandle>, CallError> {
        let filter = format!("tags.`dn.job_id` = '{}'", job_id.replace('\'', "\\'"));
        let found = self
            .post(
                "runs/search",
                json!({"experiment_ids": [experiment], "filter": filter,
                       "order_by": ["attributes.start_time DESC"], "max_results": 1}),
            )
            .await?;
        Ok(found["runs"]
            .as_array()
            .and_then(|runs| runs.first())
            .and_then(|run| run_handle(&run["info"])))
    }

    pub async fn create_run(
        &self,
        experiment: &str,
        name: &str,
        start_ms: i64,
        tags: &[(String, String)],
    ) -> Result<RunHandle, CallError> {
        let created = self
            .post(
                "runs/create",
                json!({"experiment_id": experiment, "run_name": name, "start_time": start_ms,
                       "tags": pairs(tags)}),
            )
            .await?;
        run_handle(&created["run"]["info"]).ok_or_else(|| CallError::Refused {
            code: "BAD_RESPONSE".into(),
            message: "runs/create answered without a run id".into(),
        })
    }

    /// One `log-batch` (at most 1000 metrics, 100 params, 100 tags: the caller splits).
    pub async fn log_batch(
        &self,
        run_id: &str,
        metrics: &[Metric],
        params: &[(String, String)],
        tags: &[(String, String)],
    ) -> Result<(), CallError> {
        let metrics: Vec<Value> = metrics
            .iter()
            .map(|m| json!({"key": m.key, "value": m.value, "timestamp": m.timestamp_ms, "step": m.step}))
            .collect();
        self.post(
            "runs/log-batch",
            json!({"run_id": run_id, "metrics": metrics, "params": pairs(params), "tags": pairs(tags)}),
        )
        .await
        .map(drop)
    }

    /// Sets the run's status (`RUNNING`, `FINISHED`, `FAILED`, `KILLED`), with an end time unless running.
    pub async fn set_status(
        &self,
        run_id: &str,
        status: &str,
        now_ms: i64,
    ) -> Result<(), CallError> {
        let mut body = json!({"run_id": run_id, "status": status});
        if status != "RUNNING" {
            body["end_time"] = now_ms.into();
        }
        self.post("runs/update", body).await.map(drop)
    }

    /// Uploads `file` as `<root>/<path>` through the artifact proxy.
    pub async fn upload(&self, root: &str, path: &str, file: &Path) -> Result<(), CallError> {
        let local = |e: std::io::Error| CallError::Refused {
            code: "LOCAL_FILE".into(),
            message: format!("{}: {e}", file.display()),
        };
        let body = tokio::fs::File::open(file).await.map_err(local)?;
        let size = body.metadata().await.map_err(local)?.len();
        let url = self.url(&["api/2.0/mlflow-artifacts/artifacts", root, path]);
        let time = self.timeout + Duration::from_secs(size / SLOWEST_UPLOAD_BYTES_PER_SECOND);
        let request = self
            .request(Method::PUT, url)
            .timeout(time)
            .header(reqwest::header::CONTENT_LENGTH, size)
            .body(body);
        self.send(request).await.map(drop)
    }
}

/// A metric point as `log-batch` takes it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Metric {
    pub key: String,
    pub value: f64,
    pub timestamp_ms: i64,
    pub step: i64,
}

fn pairs(values: &[(String, String)]) -> Vec<Value> {
    values
        .iter()
        .map(|(k, v)| json!({"key": k, "value": v}))
        .collect()
}

fn id_of(value: &Value, endpoint: &str) -> Result<String, CallError> {
    value
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| CallError::Refused {
            code: "BAD_RESPONSE".into(),
            message: format!("{endpoint} answered without an experiment id"),
        })
}

fn run_handle(info: &Value) -> Option<RunHandle> {
    let id = info["run_id"].as_str()?.to_owned();
    let uri = info["artifact_uri"].as_str().unwrap_or_default();
    Some(RunHandle {
        id,
        status: info["status"].as_str().unwrap_or_default().to_owned(),
        artifact_root: proxied_path(uri).ok_or_else(|| uri.to_owned()),
    })
}

/// The path under the artifact proxy of an `mlflow-artifacts:` URI (`mlflow-artifacts:/1/<run>/artifacts`
/// or `mlflow-artifacts://host:port/1/<run>/artifacts`).
fn proxied_path(uri: &str) -> Option<String> {
    let rest = uri.strip_prefix("mlflow-artifacts:")?;
    let path = match rest.strip_prefix("//") {
        Some(authority_and_path) => authority_and_path.split_once('/')?.1,
        None => rest,
    };
    Some(path.trim_matches('/').to_owned())
}

/// A transport error with its causes (reqwest's own message omits the connection refused).
fn describe(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifact_proxy_paths() {
        assert_eq!(
            proxied_path("mlflow-artifacts:/1/abc/artifacts").as_deref(),
            Some("1/abc/artifacts")
        );
        assert_eq!(
            proxied_path("mlflow-artifacts://mlflow.internal:5000/7/abc/artifacts").as_deref(),
            Some("7/abc/artifacts")
        );
        assert_eq!(proxied_path("s3://bucket/1/abc/artifacts"), None);
    }
}
