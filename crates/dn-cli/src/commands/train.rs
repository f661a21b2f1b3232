//! `dn train ...`: submit, inspect, wait for, cancel and retry jobs.

use std::io::{BufRead, IsTerminal, Write};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use dn_client::{CatalogQuery, ListJobsQuery};
use dn_types::{
    ArtifactRef, Backend, CreateTinkerSftJobRequest, DatasetRef, JobStatus, TinkerSftJobConfig,
    TrainerType,
};
use indicatif::{ProgressBar, ProgressStyle};

use crate::cli::{SftArgs, TrainCommand, WaitArgs};
use crate::connection::Connection;
use crate::output::{self, print_job, print_json, summary};

/// Exit code of `wait` when the job ended other than `completed`.
pub const EXIT_NOT_COMPLETED: i32 = 1;
/// Exit code of `wait` on --timeout-sec.
pub const EXIT_TIMEOUT: i32 = 2;
/// Exit code of `wait` when the server stayed unreachable until --timeout-sec (or, without one, for
/// [`UNREACHABLE_GIVE_UP`]).
pub const EXIT_UNREACHABLE: i32 = 3;
/// How long `wait` without --timeout-sec keeps trying a server that does not answer.
const UNREACHABLE_GIVE_UP: Duration = Duration::from_secs(600);
/// The longest pause between tries of an unreachable server.
const UNREACHABLE_RETRY_MAX: Duration = Duration::from_secs(5);

fn wire_ref(text: &str, flag: &str) -> Result<DatasetRef> {
    let parsed = ArtifactRef::parse(text, flag)?;
    Ok(DatasetRef {
        name: parsed.wire_name(),
        version: parsed.version,
    })
}

pub fn sft_request(args: &SftArgs, project: Option<&str>) -> Result<CreateTinkerSftJobRequest> {
    Ok(CreateTinkerSftJobRequest {
        name: args.name.clone(),
        model: args.model.clone(),
        project_ref: args.project_ref.clone().or(project.map(str::to_owned)),
        run_ref: args.run_ref.clone(),
        capability_ref: wire_ref(&args.capability, "--capability")?,
        tags: args.tags.clone(),
        backend: Backend::Tinker,
        trainer_type: TrainerType::Sft,
        config: TinkerSftJobConfig {
            dataset_ref: args
                .dataset
                .as_deref()
                .map(|d| wire_ref(d, "--dataset"))
                .transpose()?,
            trajectory_dataset_refs: args
                .trajectory_datasets
                .iter()
                .map(|d| wire_ref(d, "--trajectory-dataset"))
                .collect::<Result<_>>()?,
            eval_dataset_ref: args
                .eval_dataset
                .as_deref()
                .map(|d| wire_ref(d, "--eval-dataset"))
                .transpose()?,
            max_sequence_length: args.max_sequence_length,
            batch_size: args.batch_size,
            gradient_accumulation_steps: args.gradient_accumulation_steps,
            learning_rate: args.learning_rate,
            steps: args.steps,
            epochs: args.epochs,
            lora_rank: args.lora_rank,
            lora_alpha: args.lora_alpha,
            checkpoint_interval: args.checkpoint_interval,
            seed: args.seed,
            lr_scheduler: args.lr_scheduler.map(|s| s.to_string()),
            warmup_steps: args.warmup_steps,
            eval_interval: args.eval_interval,
            lora_target_modules: args.lora_target_modules.clone(),
            max_grad_norm: args.max_grad_norm,
            weight_decay: args.weight_decay,
            gradient_checkpointing: args.gradient_checkpointing,
            base_quantization: args.base_quantization.map(|q| q.to_string()),
            report_to: args.report_to.clone(),
            save_total_limit: args.save_total_limit,
            train_on: args.train_on.map(|t| t.to_string()),
            eval_samples: args.eval_samples,
            tokens_per_pass: args.tokens_per_pass,
        },
    })
}

/// Runs a `dn train` command; returns the process exit code.
pub async fn run(command: TrainCommand, conn: &Connection, json: bool) -> Result<i32> {
    let client = conn.client()?;
    let (org, ws) = (conn.organization.as_str(), conn.workspace.as_str());
    match command {
        TrainCommand::Sft(args) => {
            if args.dataset.is_none() && args.trajectory_datasets.is_empty() {
                bail!(
                    "Tinker SFT jobs require dataset_ref or at least one trajectory_dataset_ref: pass --dataset or --trajectory-dataset"
                );
            }
            let request = sft_request(&args, conn.project.as_deref())?;
            let job = client.create_job(org, ws, &request).await?;
            if args.wait {
                if !json {
                    eprintln!("submitted {}", summary(&job));
                }
                return wait(&client, conn, &job.id, &args.wait_args, json, true).await;
            }
            print_job(&job, json)?;
        }
        TrainCommand::List(args) => {
            let list = client
                .list_jobs(
                    org,
                    ws,
                    &ListJobsQuery {
                        page: Some(args.page),
                        page_size: Some(args.page_size),
                        status: args.status,
                        project_ref: None,
                    },
                )
                .await?;
            if json {
                print_json(&list)?;
            } else {
                for job in &list.items {
                    println!("{}", summary(job));
                }
                eprintln!("page {} of {} job(s) in total", list.page, list.total);
            }
        }
        TrainCommand::Get { job_id } => {
            let job = client.get_job(org, ws, &job_id).await?;
            if json {
                print_json(&job)?;
            } else {
                println!("{}", summary(&job));
                println!("  model: {}", job.model);
                println!(
                    "  capability: {}@{}",
                    job.capability.name, job.capability.version
                );
                if let Some(d) = &job.dataset_ref {
                    println!("  dataset: {}@{}", d.name, d.version);
                }
                println!("  progress: {}", output::progress(&job));
                if let Some(line) = output::loss_sparkline(&job) {
                    println!("  loss: {line}");
                }
                if let Some(error) = &job.error {
                    println!("  error: {error}");
                }
            }
        }
        TrainCommand::Wait { job_id, wait: args } => {
            return wait(&client, conn, &job_id, &args, json, false).await;
        }
        TrainCommand::Logs {
            job_id,
            follow: true,
        } => {
            return super::follow::follow(&client, org, ws, &job_id, json).await;
        }
        TrainCommand::Logs { job_id, .. } => {
            let logs = client.job_logs(org, ws, &job_id, 0).await?;
            if json {
                print_json(&logs)?;
            } else {
                for entry in &logs.items {
                    println!("{}", super::follow::entry_line(entry));
                }
            }
        }
        TrainCommand::Metrics { job_id, format } => {
            let logs = client.job_logs(org, ws, &job_id, 0).await?;
            let table = dn_client::MetricsTable::from_logs(&logs);
            match format.as_str() {
                "json" => print_json(&table.to_json())?,
                _ => print!("{}", table.to_csv()),
            }
        }
        TrainCommand::Artifacts {
            job_id,
            download: None,
            ..
        } => {
            let artifacts = client.job_artifacts(org, ws, &job_id).await?;
            print_json(&artifacts)?;
        }
        TrainCommand::Artifacts {
            job_id,
            download: Some(dest),
            checkpoint,
        } => {
            let name = match checkpoint {
                Some(name) => name,
                None => last_checkpoint(&client.job_artifacts(org, ws, &job_id).await?)
                    .with_context(|| format!("training job {job_id} has no checkpoint yet"))?,
            };
            let files = client
                .download_checkpoint(org, ws, &job_id, &name, &dest)
                .await?;
            for file in files {
                println!("{}", file.display());
            }
        }
        TrainCommand::Sample(args) => return super::sample::sample(*args, conn, json).await,
        TrainCommand::Export(args) => return super::export::export(*args, conn, json).await,
        TrainCommand::Cancel { job_id, yes } => {
            if !yes && !confirm(&format!("Cancel training job {job_id}?"))? {
                eprintln!("not cancelled");
                return Ok(EXIT_NOT_COMPLETED);
            }
            print_job(&client.cancel_job(org, ws, &job_id).await?, json)?;
        }
        TrainCommand::Retry { job_id } => {
            print_job(&client.retry_job(org, ws, &job_id).await?, json)?;
        }
        TrainCommand::Catalog {
            query,
            family,
            limit,
        } => {
            let catalog = client
                .catalog(&CatalogQuery {
                    limit: Some(limit),
                    query,
                    family,
                })
                .await?;
            if json {
                print_json(&catalog)?;
            } else {
                for m in &catalog.models {
                    println!(
                        "{} {} {} {:.3}B ctx {}",
                        m.tinker_id, m.family, m.model_type, m.size_b, m.context_length
                    );
                }
            }
        }
    }
    Ok(0)
}

fn confirm(question: &str) -> Result<bool> {
    if !std::io::stdin().is_terminal() {
        bail!("refusing to cancel without confirmation: no terminal to ask on; pass --yes");
    }
    eprint!("{question} [y/N] ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "YES"))
}

/// Prints the job's log entries after position `after` (to stderr, above the live line); returns the
/// position of the last one printed.
async fn print_new_logs(
    client: &dn_client::Client,
    conn: &Connection,
    job_id: &str,
    after: i64,
    bar: Option<&ProgressBar>,
) -> dn_client::Result<i64> {
    let logs = client
        .job_logs(&conn.organization, &conn.workspace, job_id, after)
        .await?;
    let mut last = after;
    for entry in &logs.items {
        let line = format!(
            "{} {}{}",
            entry.level.as_str(),
            entry.message,
            super::follow::sample_lines(entry)
        );
        match bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
        if let Some(seq) = entry.data.get("seq").and_then(|v| v.as_i64()) {
            last = last.max(seq);
        }
    }
    Ok(last)
}

/// Polls until the job is terminal, showing a live progress line (and, with `follow_logs`, every log
/// entry as it arrives); exit code 0 only if it completed.
pub async fn wait(
    client: &dn_client::Client,
    conn: &Connection,
    job_id: &str,
    args: &WaitArgs,
    json: bool,
    follow_logs: bool,
) -> Result<i32> {
    let started = Instant::now();
    let interval = Duration::from_secs_f64(args.poll_interval_sec.max(0.05));
    let bar = output::stderr_is_terminal().then(|| {
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} {elapsed} {msg}").expect("valid template"),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    });
    let mut last_line = String::new();
    let mut log_position = 0;
    // Since when the server has not answered (a restart, a network blip), and the pause before the next try.
    let mut unreachable: Option<(Instant, Duration)> = None;
    loop {
        let polled = async {
            let job = client
                .get_job(&conn.organization, &conn.workspace, job_id)
                .await?;
            if follow_logs && !json {
                log_position =
                    print_new_logs(client, conn, job_id, log_position, bar.as_ref()).await?;
            }
            Ok::<_, dn_client::Error>(job)
        }
        .await;
        let job = match polled {
            Ok(job) => {
                if unreachable.take().is_some() {
                    eprintln!("{job_id}: the server answers again");
                }
                job
            }
            Err(e) if e.is_transient() => {
                let (since, pause) = *unreachable.get_or_insert_with(|| {
                    eprintln!("{job_id}: {e}; trying again");
                    (Instant::now(), interval.min(UNREACHABLE_RETRY_MAX))
                });
                let out_of_time = match args.timeout_sec {
                    Some(limit) => started.elapsed().as_secs_f64() >= limit,
                    None => since.elapsed() >= UNREACHABLE_GIVE_UP,
                };
                if out_of_time {
                    if let Some(bar) = &bar {
                        bar.finish_and_clear();
                    }
                    eprintln!(
                        "gave up on {job_id}: the server has not answered for {:.0}s ({e})",
                        since.elapsed().as_secs_f64()
                    );
                    return Ok(EXIT_UNREACHABLE);
                }
                tokio::time::sleep(pause).await;
                unreachable = Some((since, (pause * 2).min(UNREACHABLE_RETRY_MAX)));
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let line = output::progress(&job);
        match &bar {
            Some(bar) => bar.set_message(match output::loss_sparkline(&job) {
                Some(spark) => format!("{job_id} {line} {spark}"),
                None => format!("{job_id} {line}"),
            }),
            // Following logs without a terminal: the entries already tell the progress.
            None if line != last_line && !json && (!follow_logs || job.status.is_terminal()) => {
                eprintln!("{job_id} {line}")
            }
            None => {}
        }
        last_line = line;
        if job.status.is_terminal() {
            if let Some(bar) = &bar {
                bar.finish_and_clear();
            }
            print_job(&job, json)?;
            if let Some(spark) = output::loss_sparkline(&job).filter(|_| !json) {
                eprintln!("loss: {spark}");
            }
            if let Some(error) = &job.error {
                eprintln!("error: {error}");
            }
            return Ok(if job.status == JobStatus::Completed {
                0
            } else {
                EXIT_NOT_COMPLETED
            });
        }
        if let Some(limit) = args.timeout_sec
            && started.elapsed().as_secs_f64() >= limit
        {
            if let Some(bar) = &bar {
                bar.finish_and_clear();
            }
            eprintln!(
                "timed out after {limit}s waiting for {job_id} ({})",
                job.status
            );
            return Ok(EXIT_TIMEOUT);
        }
        tokio::time::sleep(interval).await;
    }
}

/// The name of the last checkpoint a job's artifacts list (`final` once the job completed).
fn last_checkpoint(artifacts: &dn_types::TrainingJobArtifacts) -> Option<String> {
    artifacts.artifacts.get("checkpoints")?.as_array()?.last()?["name"]
        .as_str()
        .map(str::to_owned)
}
