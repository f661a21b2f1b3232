//! `dn model pull`, `dn model list`, `dn model import`: models on this node.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use dn_model::DownloadProgress;
use dn_model::hub::{HubId, Need, hub_cache_dir};
use dn_model::inventory::{self, ModelInfo, ModelSource};
use indicatif::{HumanBytes, ProgressBar, ProgressStyle};

use crate::cli::ModelCommand;
use crate::config::{self, FileConfig};
use crate::output::{print_json, stderr_is_terminal};

pub async fn run(command: ModelCommand, json: bool) -> Result<i32> {
    match command {
        ModelCommand::Pull { id, revision } => pull(id, revision, json).await,
        ModelCommand::List { data_dir, config } => list(data_dir, config, json).await,
        ModelCommand::Merge {
            base,
            adapter,
            out,
            target,
        } => {
            let target = super::export::Target {
                format: target.format,
                dtype: target.dtype,
                quant: target.quant,
            };
            super::export::merge_command(base, adapter, out, target, json).await
        }
        ModelCommand::Import { gguf, out } => {
            let summary = tokio::task::spawn_blocking(move || {
                dn_model::import_gguf(&gguf, &out).map(|s| (s, out))
            })
            .await??;
            let (summary, out) = summary;
            println!(
                "wrote {} ({} tensors, {} parameters)",
                out.display(),
                summary.tensors,
                summary.parameters
            );
            Ok(0)
        }
    }
}

async fn pull(id: String, revision: Option<String>, json: bool) -> Result<i32> {
    let model = match revision {
        Some(_) if id.contains('@') => {
            bail!("{id}: give the revision either as @REVISION or --revision")
        }
        Some(revision) => format!("{id}@{revision}"),
        None => id,
    };
    let Some(id) = HubId::parse(&model) else {
        bail!("{model}: not a hub id (org/name or org/name@revision)");
    };
    let id_shown = id.to_string();
    let (dir, downloaded) = tokio::task::spawn_blocking(move || {
        let mut progress = PullProgress::new();
        let dir = dn_model::resolve_model(&model, Need::Weights, &mut progress);
        progress.close();
        dir.map(|dir| (dir, progress.total))
    })
    .await??;
    let info = inventory::describe_model(&id_shown, &dir, ModelSource::HubCache);
    if json {
        print_json(&info)?;
    } else {
        println!(
            "{} in {} ({} downloaded, {} on disk): {} {}, {} parameters",
            if downloaded == 0 {
                "up to date"
            } else {
                "pulled"
            },
            dir.display(),
            HumanBytes(downloaded),
            HumanBytes(info.size_bytes),
            info.family.as_deref().unwrap_or("?"),
            info.dtype.as_deref().unwrap_or("?"),
            info.parameters.map_or("?".into(), human_count),
        );
    }
    Ok(0)
}

async fn list(data_dir: Option<PathBuf>, config_file: Option<PathBuf>, json: bool) -> Result<i32> {
    let file = FileConfig::load(config_file.as_deref())?;
    let data_dir = data_dir
        .or_else(|| file.data_dir.clone())
        .unwrap_or_else(config::default_data_dir);
    let models = tokio::task::spawn_blocking(move || {
        let mut models: Vec<ModelInfo> = file
            .models
            .iter()
            .map(|entry| {
                inventory::describe_configured(entry, None).unwrap_or_else(|reason| {
                    let mut info =
                        inventory::describe_model(entry, Path::new(entry), ModelSource::Catalog);
                    info.reason = Some(reason);
                    info
                })
            })
            .collect();
        models.extend(inventory::local_models(&data_dir.join("models")));
        for info in inventory::hub_cache_models(&hub_cache_dir()) {
            if !models.iter().any(|m| m.id == info.id) {
                models.push(info);
            }
        }
        models
    })
    .await
    .context("listing models")?;
    if json {
        print_json(&models)?;
        return Ok(0);
    }
    if models.is_empty() {
        println!(
            "no models: `dn model pull ORG/NAME` downloads one into {}",
            hub_cache_dir().display()
        );
        return Ok(0);
    }
    let rows: Vec<[String; 7]> = models.iter().map(row).collect();
    let header = [
        "ID",
        "FAMILY",
        "PARAMS",
        "CONTEXT",
        "DTYPE",
        "SIZE",
        "TRAINABLE",
    ]
    .map(String::from);
    let mut widths = header.clone().map(|h| h.len());
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for r in std::iter::once(&header).chain(&rows) {
        let line: Vec<String> = r
            .iter()
            .zip(widths)
            .enumerate()
            .map(|(i, (cell, w))| {
                if i == 6 {
                    cell.clone()
                } else {
                    format!("{cell:w$}")
                }
            })
            .collect();
        println!("{}", line.join("  ").trim_end());
    }
    Ok(0)
}

fn row(m: &ModelInfo) -> [String; 7] {
    let trainable = match (m.trainable, &m.reason) {
        (true, None) => "yes".to_owned(),
        (true, Some(note)) => format!("yes ({note})"),
        (false, reason) => format!("no: {}", reason.as_deref().unwrap_or("?")),
    };
    [
        m.id.clone(),
        m.family.clone().unwrap_or_else(|| "-".into()),
        match (m.parameters, m.active_parameters) {
            (Some(total), Some(active)) => {
                format!("{} ({} active)", human_count(total), human_count(active))
            }
            (total, _) => total.map_or("-".into(), human_count),
        },
        m.context_length.map_or("-".into(), |c| c.to_string()),
        m.dtype.clone().unwrap_or_else(|| "-".into()),
        HumanBytes(m.size_bytes).to_string(),
        trainable,
    ]
}

/// `135.0M`, `8.03B`.
fn human_count(n: u64) -> String {
    match n {
        n if n >= 1_000_000_000 => format!("{:.2}B", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.1}M", n as f64 / 1e6),
        n if n >= 1_000 => format!("{:.1}K", n as f64 / 1e3),
        n => n.to_string(),
    }
}

/// Download progress: a bar per file on a terminal (bytes, rate, ETA), else a line when a file starts, every
/// few seconds while it runs, and when it ends.
struct PullProgress {
    bar: Option<ProgressBar>,
    file: String,
    size: u64,
    position: u64,
    started: Instant,
    last_line: Instant,
    /// The next update is where a (resumed) download starts, not new bytes.
    offset_pending: bool,
    /// Bytes downloaded by this pull (not counting resumed parts).
    total: u64,
}

impl PullProgress {
    fn new() -> Self {
        PullProgress {
            bar: None,
            file: String::new(),
            size: 0,
            position: 0,
            started: Instant::now(),
            last_line: Instant::now(),
            offset_pending: false,
            total: 0,
        }
    }

    fn close(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }

    fn rate(&self) -> f64 {
        self.position as f64 / self.started.elapsed().as_secs_f64().max(1e-3)
    }
}

impl DownloadProgress for PullProgress {
    fn init(&mut self, size: usize, filename: &str) {
        // hf-hub announces a file twice (before opening its `.part`, then per request): once is enough.
        self.offset_pending = true;
        if filename == self.file && self.bar.is_some() {
            self.position = 0;
            if let Some(bar) = &self.bar {
                bar.set_position(0);
            }
            return;
        }
        self.close();
        (self.file, self.size, self.position) = (filename.to_owned(), size as u64, 0);
        self.started = Instant::now();
        self.last_line = Instant::now();
        if stderr_is_terminal() {
            let bar = ProgressBar::new(size as u64);
            bar.set_style(
                ProgressStyle::with_template(
                    "{msg:32!} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            bar.set_message(filename.to_owned());
            self.bar = Some(bar);
        } else {
            eprintln!("downloading {filename} ({})", HumanBytes(size as u64));
            self.bar = Some(ProgressBar::hidden());
        }
    }

    fn update(&mut self, size: usize) {
        self.position += size as u64;
        if !std::mem::take(&mut self.offset_pending) {
            self.total += size as u64;
        }
        if let Some(bar) = &self.bar {
            bar.inc(size as u64);
            if bar.is_hidden() && self.last_line.elapsed() > Duration::from_secs(5) {
                self.last_line = Instant::now();
                let rate = self.rate();
                let eta = (self.size.saturating_sub(self.position)) as f64 / rate.max(1.0);
                eprintln!(
                    "{}: {}/{} ({}/s, eta {:.0}s)",
                    self.file,
                    HumanBytes(self.position),
                    HumanBytes(self.size),
                    HumanBytes(rate as u64),
                    eta
                );
            }
        }
    }

    fn finish(&mut self) {
        if self.bar.as_ref().is_some_and(ProgressBar::is_hidden) {
            eprintln!(
                "{}: {} in {:.1}s ({}/s)",
                self.file,
                HumanBytes(self.position),
                self.started.elapsed().as_secs_f64(),
                HumanBytes(self.rate() as u64)
            );
        }
        self.close();
        self.file.clear();
    }
}
