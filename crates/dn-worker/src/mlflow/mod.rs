//! `report_to: mlflow`: each job attempt reports to a run on the worker's MLflow tracking server through
//! its REST API. The run carries the job's config as params and tags naming the job, its model, datasets,
//! capability and dn's version; every step's metrics and each eval loss, batched; the final adapter (and,
//! with `DN_MLFLOW_LOG_CHECKPOINTS`, every checkpoint) as artifacts; and, at the end, the job's status. An
//! attempt resuming from a checkpoint continues the job's run. Training never waits on MLflow: the runner
//! queues (bounded, what does not fit is dropped and said) and a task posts with retries; only the job's
//! end waits for what is queued, at most `DN_MLFLOW_FINISH_TIMEOUT_SECONDS`.

mod client;
mod describe;
mod task;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use dn_train::StepRecord;
use dn_types::{SftConfig, TrainingJob};
use reqwest::Url;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use client::{Client, Metric};
use task::{Message, Plan, Warnings};

/// The most reports `DN_MLFLOW_MAX_QUEUED` may keep waiting.
const MAX_QUEUED_LIMIT: u64 = 1_000_000;
/// How long the job's end gives the run's status, once the rest was given up.
const LAST_STATUS_TIMEOUT: Duration = Duration::from_secs(10);

/// How a worker reaches its MLflow tracking server, read from the variables MLflow's own clients read.
#[derive(Clone)]
pub struct MlflowSettings {
    /// `MLFLOW_TRACKING_URI`: the tracking server, `http://` or `https://`.
    pub tracking_uri: Url,
    /// `MLFLOW_EXPERIMENT_NAME`: every job's experiment (default: the job's project, else
    /// `<organization>/<workspace>`).
    pub experiment_name: Option<String>,
    /// `MLFLOW_TRACKING_USERNAME` + `MLFLOW_TRACKING_PASSWORD`, or `MLFLOW_TRACKING_TOKEN`.
    pub auth: Option<MlflowAuth>,
    /// `MLFLOW_TRACKING_INSECURE_TLS`: accept any certificate.
    pub insecure_tls: bool,
    /// `MLFLOW_HTTP_REQUEST_TIMEOUT` (seconds; default 30): one call's limit.
    pub request_timeout: Duration,
    /// `DN_MLFLOW_LOG_CHECKPOINTS`: every checkpoint as artifacts too, not only the final adapter.
    pub log_checkpoints: bool,
    /// `DN_MLFLOW_MAX_QUEUED` (default 10000): steps, evals and uploads waiting for the server at most.
    pub max_queued: usize,
    /// `DN_MLFLOW_FINISH_TIMEOUT_SECONDS` (default 60): how long a job's end waits for what is queued.
    pub finish_timeout: Duration,
}

/// Credentials for the tracking server.
#[derive(Clone)]
pub enum MlflowAuth {
    Basic { username: String, password: String },
    Bearer(String),
}

impl std::fmt::Debug for MlflowAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MlflowAuth::Basic { username, .. } => write!(f, "Basic({username}, ***)"),
            MlflowAuth::Bearer(_) => f.write_str("Bearer(***)"),
        }
    }
}

impl std::fmt::Debug for MlflowSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MlflowSettings")
            .field("tracking_uri", &self.display_uri())
            .field("experiment_name", &self.experiment_name)
            .field("auth", &self.auth)
            .field("insecure_tls", &self.insecure_tls)
            .field("request_timeout", &self.request_timeout)
            .field("log_checkpoints", &self.log_checkpoints)
            .field("max_queued", &self.max_queued)
            .field("finish_timeout", &self.finish_timeout)
            .finish()
    }
}

impl MlflowSettings {
    /// The tracking URI without any credentials it carries (`http://user:pass@host` works as Basic auth),
    /// for logs.
    pub fn display_uri(&self) -> String {
        let mut uri = self.tracking_uri.clone();
        let _ = uri.set_username("");
        let _ = uri.set_password(None);
        uri.to_string()
    }

    /// The settings in the variables `var` reads; `None` without `MLFLOW_TRACKING_URI`. An error names
    /// the variable and what it takes.
    pub fn from_env(
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<MlflowSettings>, String> {
        let var = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        let Some(uri) = var("MLFLOW_TRACKING_URI") else {
            return Ok(None);
        };
        let tracking_uri = Url::parse(uri.trim())
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .ok_or_else(|| {
                format!(
                    "MLFLOW_TRACKING_URI {uri:?}: dn reports to an MLflow tracking server over HTTP: give \
                     its http:// or https:// address"
                )
            })?;
        let flag = |name: &str| -> Result<bool, String> {
            match var(name).map(|v| v.trim().to_ascii_lowercase()) {
                None => Ok(false),
                Some(v) if ["1", "true", "yes"].contains(&v.as_str()) => Ok(true),
                Some(v) if ["0", "false", "no"].contains(&v.as_str()) => Ok(false),
                Some(v) => Err(format!("{name} {v:?}: expected true or false")),
            }
        };
        let number = |name: &str, default: u64| -> Result<u64, String> {
            var(name).map_or(Ok(default), |v| match v.trim().parse::<u64>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(format!("{name} {v:?}: expected a whole number above 0")),
            })
        };
        let auth = match (
            var("MLFLOW_TRACKING_USERNAME"),
            var("MLFLOW_TRACKING_PASSWORD"),
            var("MLFLOW_TRACKING_TOKEN"),
        ) {
            (Some(username), Some(password), _) => Some(MlflowAuth::Basic { username, password }),
            (Some(_), None, _) | (None, Some(_), _) => {
                return Err(
                    "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD go together".to_owned(),
                );
            }
            (None, None, Some(token)) => Some(MlflowAuth::Bearer(token)),
            (None, None, None) => None,
        };
        Ok(Some(MlflowSettings {
            tracking_uri,
            experiment_name: var("MLFLOW_EXPERIMENT_NAME").map(|n| n.trim().to_owned()),
            auth,
            insecure_tls: flag("MLFLOW_TRACKING_INSECURE_TLS")?,
            request_timeout: Duration::from_secs(number("MLFLOW_HTTP_REQUEST_TIMEOUT", 30)?),
            log_checkpoints: flag("DN_MLFLOW_LOG_CHECKPOINTS")?,
            max_queued: match number("DN_MLFLOW_MAX_QUEUED", 10_000)? {
                n if n > MAX_QUEUED_LIMIT => {
                    return Err(format!(
                        "DN_MLFLOW_MAX_QUEUED {n}: at most {MAX_QUEUED_LIMIT} reports may wait"
                    ));
                }
                n => n as usize,
            },
            finish_timeout: Duration::from_secs(number("DN_MLFLOW_FINISH_TIMEOUT_SECONDS", 60)?),
        }))
    }
}

/// One attempt's reporting, on the runner's side: queues without waiting.
pub(crate) struct MlflowReporter {
    queue: Option<mpsc::Sender<Message>>,
    finish: Option<oneshot::Sender<Option<&'static str>>>,
    /// The reporting task (`None` once finished; aborted if the reporter is dropped before).
    task: Option<JoinHandle<()>>,
    client: Arc<Client>,
    /// The run's id once the task opened it.
    run_id: Arc<OnceLock<String>>,
    warnings: Arc<Warnings>,
    /// Hard links of checkpoint files waiting for their upload (removed at the end).
    staging: PathBuf,
    uri: String,
    settings: Arc<MlflowSettings>,
    dropped: u64,
}

impl MlflowReporter {
    /// Starts reporting `job`'s attempt (`resuming`: it continues from a checkpoint, after `restored`).
    pub fn start(
        settings: Arc<MlflowSettings>,
        job: &TrainingJob,
        config: &SftConfig,
        resuming: bool,
        restored: &[StepRecord],
        staging: PathBuf,
    ) -> Result<MlflowReporter, String> {
        let client = Arc::new(Client::new(&settings)?);
        let started = describe::now_ms();
        let plan = Plan {
            uri: settings.display_uri(),
            experiment: settings
                .experiment_name
                .clone()
                .unwrap_or_else(|| describe::default_experiment(job)),
            run_name: describe::run_name(job),
            job_id: job.id.clone(),
            continue_run: resuming,
            tags: describe::tags(job, config),
            params: describe::params(job),
            restored: restored
                .iter()
                .flat_map(|r| describe::step_metrics(r, None, started))
                .collect(),
        };
        let uri = plan.uri.clone();
        let (queue, receiver) = mpsc::channel(settings.max_queued.max(1));
        let (finish, finished) = oneshot::channel();
        let warnings = Arc::new(Warnings::default());
        let run_id = Arc::new(OnceLock::new());
        let task = tokio::spawn(task::report(
            client.clone(),
            plan,
            receiver,
            finished,
            warnings.clone(),
            run_id.clone(),
        ));
        Ok(MlflowReporter {
            queue: Some(queue),
            finish: Some(finish),
            task: Some(task),
            client,
            run_id,
            warnings,
            staging,
            uri,
            settings,
            dropped: 0,
        })
    }

    fn send(&mut self, message: Message) -> bool {
        let Some(queue) = &self.queue else {
            return false;
        };
        match queue.try_send(message) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                if self.dropped == 0 {
                    self.warnings.push(format!(
                        "MLflow {}: {} report(s) are waiting for the server already \
                         (DN_MLFLOW_MAX_QUEUED); later ones are dropped until it catches up",
                        self.uri, self.settings.max_queued
                    ));
                }
                self.dropped += 1;
                false
            }
            // The task gave up (and said why).
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    pub fn step(&mut self, record: &StepRecord, peak_flops: Option<f64>) {
        let metrics = describe::step_metrics(record, peak_flops, describe::now_ms());
        self.send(Message::Metrics(metrics));
    }

    pub fn eval(&mut self, step: u64, loss: f64) {
        if !loss.is_finite() {
            // JSON has no NaN: MLflow would refuse the whole batch it went in.
            return;
        }
        let metric = Metric {
            key: "eval/loss".into(),
            value: loss,
            timestamp_ms: describe::now_ms(),
            step: step as i64,
        };
        self.send(Message::Metrics(vec![metric]));
    }

    /// Queues checkpoint `name` in `dir` for upload (`final` as `adapter/`, without the optimizer state;
    /// step checkpoints as `checkpoints/<name>/` when asked for), through hard links (copies across
    /// file systems) so the runner may delete `dir` at once.
    pub fn checkpoint(&mut self, name: &str, dir: &Path) {
        let (dest, skip) = match name {
            "final" => ("adapter".to_owned(), Some(dn_train::OPTIMIZER_FILE)),
            _ if self.settings.log_checkpoints => (format!("checkpoints/{name}"), None),
            _ => return,
        };
        let staged = self.staging.join(name);
        if let Err(e) = stage(dir, &staged, skip) {
            self.warnings.push(format!(
                "MLflow {}: cannot stage checkpoint {name} for upload ({e}); not logged",
                self.uri
            ));
            let _ = std::fs::remove_dir_all(&staged);
            return;
        }
        if !self.send(Message::Artifact {
            dir: staged.clone(),
            dest,
        }) {
            let _ = std::fs::remove_dir_all(&staged);
        }
    }

    /// Warnings for the job log since the last call.
    pub fn take_warnings(&self) -> Vec<String> {
        self.warnings.take()
    }

    /// Ends the attempt's reporting: what is queued is posted and the run's status set (`None`: left
    /// running, for the attempt that continues the job), waiting at most the finish timeout (then the
    /// rest is given up, but the status still gets a short try). The warnings not taken yet.
    pub async fn finish(mut self, status: Option<&'static str>) -> Vec<String> {
        self.queue = None;
        if let Some(finish) = self.finish.take() {
            let _ = finish.send(status);
        }
        let timeout = self.settings.finish_timeout;
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(timeout, &mut task).await.is_err()
        {
            task.abort();
            self.warnings.push(format!(
                "MLflow {}: still not done after {} s at the job's end; the rest of its reports \
                 (metrics, adapter) dropped",
                self.uri,
                timeout.as_secs()
            ));
            if let (Some(status), Some(run)) = (status, self.run_id.get()) {
                let set = self.client.set_status(run, status, describe::now_ms());
                if !matches!(
                    tokio::time::timeout(LAST_STATUS_TIMEOUT, set).await,
                    Ok(Ok(()))
                ) {
                    self.warnings.push(format!(
                        "MLflow {}: the run's status ({status}) could not be set",
                        self.uri
                    ));
                }
            }
        }
        if self.dropped > 0 {
            self.warnings.push(format!(
                "MLflow {}: {} report(s) dropped while the server was not keeping up",
                self.uri, self.dropped
            ));
        }
        let _ = tokio::fs::remove_dir_all(&self.staging).await;
        self.warnings.take()
    }
}

impl Drop for MlflowReporter {
    /// An attempt that ends without [`MlflowReporter::finish`] (an early return, a dropped future)
    /// leaves no task behind; its run stays running for the attempt after it.
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Links (or copies) the files of `from` into `to`, but `skip`.
fn stage(from: &Path, to: &Path, skip: Option<&str>) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        if !entry.file_type()?.is_file()
            || Some(entry.file_name().to_string_lossy().as_ref()) == skip
        {
            continue;
        }
        let target = to.join(entry.file_name());
        // Never copy onto an existing link of the same file (the copy would truncate the source).
        if target.exists() {
            std::fs::remove_file(&target)?;
        }
        if std::fs::hard_link(entry.path(), &target).is_err() {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(vars: &[(&str, &str)]) -> Result<Option<MlflowSettings>, String> {
        MlflowSettings::from_env(|name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn settings_come_from_mlflows_variables() {
        assert!(settings(&[]).unwrap().is_none());
        let s = settings(&[
            ("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000"),
            ("MLFLOW_TRACKING_TOKEN", "t"),
            ("DN_MLFLOW_LOG_CHECKPOINTS", "true"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(s.tracking_uri.as_str(), "http://127.0.0.1:5000/");
        assert!(matches!(s.auth, Some(MlflowAuth::Bearer(_))));
        assert!(s.log_checkpoints);
        assert_eq!(s.finish_timeout, Duration::from_secs(60));
        // Credentials in the URI never reach a log.
        let s = settings(&[("MLFLOW_TRACKING_URI", "https://me:secret@mlflow.internal/")])
            .unwrap()
            .unwrap();
        assert_eq!(s.display_uri(), "https://mlflow.internal/");
        assert!(!format!("{s:?}").contains("secret"));
        for (name, value, expected) in [
            (
                "MLFLOW_TRACKING_URI",
                "file:///tmp/mlruns",
                "MLFLOW_TRACKING_URI",
            ),
            ("MLFLOW_TRACKING_URI", "databricks", "http://"),
            ("MLFLOW_TRACKING_USERNAME", "u", "MLFLOW_TRACKING_PASSWORD"),
            ("DN_MLFLOW_MAX_QUEUED", "0", "DN_MLFLOW_MAX_QUEUED"),
            ("DN_MLFLOW_MAX_QUEUED", "99999999999", "at most"),
            ("MLFLOW_TRACKING_INSECURE_TLS", "maybe", "true or false"),
        ] {
            let mut vars = vec![("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")];
            vars.retain(|(k, _)| *k != name);
            vars.push((name, value));
            let e = settings(&vars).unwrap_err();
            assert!(e.contains(expected), "{name}={value}: {e}");
        }
    }
}
