//! The task that talks to MLflow for one job attempt, apart from training: it opens the run (continuing
//! the job's run when the attempt resumes), then posts what the runner queues, metrics batched, and sets
//! the run's status at the end. A server that is down or slow is retried with backoff (the runner's queue
//! is bounded and drops what does not fit); an answer that refuses a call is reported and that call dropped.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::client::{CallError, Client, Metric, RunHandle};
use super::describe::now_ms;

/// `log-batch` limits: metrics, params and tags per call.
const METRICS_PER_BATCH: usize = 1000;
const PARAMS_PER_BATCH: usize = 100;
const TAGS_PER_BATCH: usize = 100;
/// Retry pauses double from the first up to the last.
const FIRST_PAUSE: Duration = Duration::from_secs(1);
const LONGEST_PAUSE: Duration = Duration::from_secs(30);
/// Warnings kept for the job log between two takes at most (the rest are counted).
const MAX_WARNINGS: usize = 50;
/// Tries of one artifact file before it is given up (so one file cannot hold the reports behind it).
const UPLOAD_TRIES: u32 = 5;
/// Unlimited tries: metrics and the run's bookkeeping wait for the server as long as the attempt lasts.
const UNTIL_ANSWERED: u32 = u32::MAX;

/// What the runner hands the task.
pub(crate) enum Message {
    Metrics(Vec<Metric>),
    /// Upload the files under `dir` to `<run artifacts>/<dest>/`, then delete `dir`.
    Artifact {
        dir: PathBuf,
        dest: String,
    },
}

/// The run to open.
pub(crate) struct Plan {
    pub uri: String,
    pub experiment: String,
    pub run_name: String,
    pub job_id: String,
    /// The attempt resumes from a checkpoint: continue the job's newest run if there is one.
    pub continue_run: bool,
    pub tags: Vec<(String, String)>,
    pub params: Vec<(String, String)>,
    /// The steps before this attempt, logged only into a run created now.
    pub restored: Vec<Metric>,
}

/// Warnings for the job log, taken by the runner as it goes: at most [`MAX_WARNINGS`] between two takes,
/// the rest counted in one line.
#[derive(Default)]
pub(crate) struct Warnings(Mutex<(Vec<String>, usize)>);

impl Warnings {
    pub fn push(&self, warning: String) {
        let mut inner = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match inner.0.len() < MAX_WARNINGS {
            true => inner.0.push(warning),
            false => inner.1 += 1,
        }
    }

    pub fn take(&self) -> Vec<String> {
        let mut inner = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let (mut warnings, suppressed) = (std::mem::take(&mut inner.0), inner.1);
        if suppressed > 0 {
            warnings.push(format!("{suppressed} more MLflow warning(s) not shown"));
            inner.1 = 0;
        }
        warnings
    }
}

/// Retries `call` while MLflow is unreachable (at most `tries` times), saying once when an outage starts
/// and when it ends; `Err` with the refusal when MLflow answers no, or with the last failure.
async fn retrying<T, Fut>(
    plan: &Plan,
    warnings: &Warnings,
    what: &str,
    tries: u32,
    mut call: impl FnMut() -> Fut,
) -> Result<T, String>
where
    Fut: Future<Output = Result<T, CallError>>,
{
    let mut pause = FIRST_PAUSE;
    let mut failures = 0u32;
    loop {
        match call().await {
            Ok(value) => {
                if failures > 0 {
                    warnings.push(format!(
                        "MLflow {}: answering again ({what} after {failures} failed tries)",
                        plan.uri
                    ));
                }
                return Ok(value);
            }
            Err(CallError::Retryable(e)) if failures + 1 >= tries => {
                return Err(format!("{what}: {e} ({tries} tries)"));
            }
            Err(CallError::Retryable(e)) => {
                if failures == 0 {
                    warnings.push(format!(
                        "MLflow {}: {what} failed ({e}); retrying with backoff, training goes on",
                        plan.uri
                    ));
                }
                failures += 1;
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(LONGEST_PAUSE);
            }
            Err(refused) => return Err(format!("{what}: {refused}")),
        }
    }
}

/// The experiment and the run: the job's newest when continuing, else a new one with the job's params
/// and the steps before this attempt (an earlier attempt's run left running is closed as failed).
async fn open(client: &Client, plan: &Plan, warnings: &Warnings) -> Result<RunHandle, String> {
    let until_answered = UNTIL_ANSWERED;
    let experiment = retrying(
        plan,
        warnings,
        "finding the experiment",
        until_answered,
        || client.experiment(&plan.experiment),
    )
    .await?;
    let newest = retrying(
        plan,
        warnings,
        "finding the job's run",
        until_answered,
        || client.find_run(&experiment, &plan.job_id),
    )
    .await?;
    match newest {
        Some(run) if plan.continue_run => {
            retrying(
                plan,
                warnings,
                "marking the run running",
                until_answered,
                || client.set_status(&run.id, "RUNNING", now_ms()),
            )
            .await?;
            for tags in plan.tags.chunks(TAGS_PER_BATCH) {
                retrying(plan, warnings, "tagging the run", until_answered, || {
                    client.log_batch(&run.id, &[], &[], tags)
                })
                .await?;
            }
            return Ok(run);
        }
        // This attempt starts over: the run of one that stopped without a status is closed.
        Some(run) if run.status == "RUNNING" => {
            retrying(
                plan,
                warnings,
                "closing the earlier attempt's run",
                until_answered,
                || client.set_status(&run.id, "FAILED", now_ms()),
            )
            .await?;
        }
        _ => {}
    }
    let run = retrying(plan, warnings, "creating the run", until_answered, || {
        client.create_run(&experiment, &plan.run_name, now_ms(), &plan.tags)
    })
    .await?;
    // The run exists: a refusal from here on costs what it refused, not the run.
    for params in plan.params.chunks(PARAMS_PER_BATCH) {
        let logged = retrying(plan, warnings, "logging the params", until_answered, || {
            client.log_batch(&run.id, &[], params, &[])
        })
        .await;
        if let Err(e) = logged {
            warnings.push(format!("MLflow {}: {e}; those params not logged", plan.uri));
        }
    }
    for metrics in plan.restored.chunks(METRICS_PER_BATCH) {
        let logged = retrying(
            plan,
            warnings,
            "logging the restored steps",
            until_answered,
            || client.log_batch(&run.id, metrics, &[], &[]),
        )
        .await;
        if let Err(e) = logged {
            warnings.push(format!("MLflow {}: {e}; those steps not logged", plan.uri));
        }
    }
    Ok(run)
}

/// Reports one attempt: opens the run, posts what arrives on `queue` until `finish` says how the attempt
/// ended (`Some(status)` sets the run's status; `None` leaves it running for the next attempt).
pub(crate) async fn report(
    client: Arc<Client>,
    plan: Plan,
    mut queue: mpsc::Receiver<Message>,
    mut finish: oneshot::Receiver<Option<&'static str>>,
    warnings: Arc<Warnings>,
    run_id: Arc<OnceLock<String>>,
) {
    let run = match open(&client, &plan, &warnings).await {
        Ok(run) => {
            let _ = run_id.set(run.id.clone());
            run
        }
        Err(e) => {
            warnings.push(format!(
                "MLflow {}: {e}; this attempt reports nothing to MLflow",
                plan.uri
            ));
            return;
        }
    };
    let mut artifacts_elsewhere_said = false;
    let status = loop {
        let message = tokio::select! {
            biased;
            message = queue.recv() => message,
            status = &mut finish => break status.ok().flatten(),
        };
        // The runner is done queueing: how the attempt ended follows (none if the runner went away).
        let Some(message) = message else {
            break (&mut finish).await.ok().flatten();
        };
        // Everything queued meanwhile goes in the same batch; uploads after it.
        let mut metrics = Vec::new();
        let mut uploads = Vec::new();
        let mut next = Some(message);
        while let Some(message) = next.take() {
            match message {
                Message::Metrics(m) => metrics.extend(m),
                Message::Artifact { dir, dest } => uploads.push((dir, dest)),
            }
            if metrics.len() < METRICS_PER_BATCH {
                next = queue.try_recv().ok();
            }
        }
        for batch in metrics.chunks(METRICS_PER_BATCH) {
            let posted = retrying(&plan, &warnings, "logging metrics", UNTIL_ANSWERED, || {
                client.log_batch(&run.id, batch, &[], &[])
            })
            .await;
            if let Err(e) = posted {
                let steps = (batch[0].step, batch[batch.len() - 1].step);
                warnings.push(format!(
                    "MLflow {}: {e}; {} metric value(s) of steps {}..{} dropped",
                    plan.uri,
                    batch.len(),
                    steps.0,
                    steps.1
                ));
            }
        }
        for (dir, dest) in uploads {
            match &run.artifact_root {
                Ok(root) => upload_dir(&client, &plan, &warnings, root, &dir, &dest).await,
                Err(uri) if !artifacts_elsewhere_said => {
                    artifacts_elsewhere_said = true;
                    warnings.push(format!(
                        "MLflow {}: the run's artifacts go to {uri}, which dn does not write (it uploads \
                         through the tracking server: `mlflow server` serves artifacts by default); {dest} \
                         not logged",
                        plan.uri
                    ));
                }
                Err(_) => {}
            }
            let _ = tokio::fs::remove_dir_all(&dir).await;
        }
    };
    if let Some(status) = status {
        let set = retrying(
            &plan,
            &warnings,
            "setting the run's status",
            UNTIL_ANSWERED,
            || client.set_status(&run.id, status, now_ms()),
        )
        .await;
        if let Err(e) = set {
            warnings.push(format!("MLflow {}: {e}", plan.uri));
        }
    }
}

/// Uploads each file under `dir` as `<root>/<dest>/<relative path>`.
async fn upload_dir(
    client: &Client,
    plan: &Plan,
    warnings: &Warnings,
    root: &str,
    dir: &Path,
    dest: &str,
) {
    for file in files_under(dir) {
        let relative = file.strip_prefix(dir).unwrap_or(&file).to_string_lossy();
        let path = format!("{dest}/{relative}");
        let uploaded = retrying(
            plan,
            warnings,
            &format!("uploading {path}"),
            UPLOAD_TRIES,
            || client.upload(root, &path, &file),
        )
        .await;
        if let Err(e) = uploaded {
            warnings.push(format!("MLflow {}: {e}; not logged", plan.uri));
        }
    }
}

/// The files under `dir`, depth first, in name order (at most 4 levels: checkpoints are flat).
fn files_under(dir: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        paths.sort();
        for path in paths {
            if path.is_dir() && depth < 4 {
                walk(&path, depth + 1, out);
            } else if path.is_file() {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, 0, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_past_the_cap_are_counted_until_taken() {
        let warnings = Warnings::default();
        for i in 0..MAX_WARNINGS + 3 {
            warnings.push(format!("w{i}"));
        }
        let taken = warnings.take();
        assert_eq!(taken.len(), MAX_WARNINGS + 1);
        assert_eq!(taken[MAX_WARNINGS], "3 more MLflow warning(s) not shown");
        warnings.push("later".into());
        assert_eq!(warnings.take(), ["later"]);
    }
}
