//! `dn train logs ID --follow`: a job's log entries as they happen (the server's event stream), with a
//! progress bar on a terminal. A dropped connection is reopened after the last entry seen, so nothing is
//! printed twice or skipped. Exit code 0 only if the job completed.

use std::time::Duration;

use anyhow::Result;
use dn_types::TrainingJobLogEntry;
use indicatif::{ProgressBar, ProgressStyle};

use crate::commands::train::EXIT_NOT_COMPLETED;
use crate::output;

/// Consecutive failed (re)connections before giving up.
const MAX_RECONNECTS: u32 = 30;

/// `TIMESTAMP LEVEL MESSAGE`, as `dn train logs` prints an entry (with an `eval_samples` entry's
/// samples on the lines after it).
pub fn entry_line(entry: &TrainingJobLogEntry) -> String {
    format!(
        "{} {:<7} {}{}",
        entry
            .timestamp
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        entry.level.as_str(),
        entry.message,
        sample_lines(entry)
    )
}

/// Characters of a sample's text shown per line.
const SAMPLE_CHARS: usize = 300;

fn one_line(text: &str) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    match flat.char_indices().nth(SAMPLE_CHARS) {
        Some((end, _)) => format!("{}...", &flat[..end]),
        None => flat,
    }
}

/// An `eval_samples` entry's samples, each as prompt / reference / generated lines (empty for other
/// entries).
pub fn sample_lines(entry: &TrainingJobLogEntry) -> String {
    if entry.data.get("event").and_then(|e| e.as_str()) != Some("eval_samples") {
        return String::new();
    }
    let mut out = String::new();
    let samples = entry.data.get("samples").and_then(|s| s.as_array());
    for (i, sample) in samples.into_iter().flatten().enumerate() {
        let text = |key: &str| one_line(sample.get(key).and_then(|v| v.as_str()).unwrap_or(""));
        out.push_str(&format!(
            "\n  [{}] prompt:    {}\n      reference: {}\n      generated: {}",
            i + 1,
            text("prompt"),
            text("reference"),
            text("generated")
        ));
    }
    out
}

fn print_entry(entry: &TrainingJobLogEntry, raw: &str, json: bool, bar: Option<&ProgressBar>) {
    let line = if json {
        raw.to_owned()
    } else {
        entry_line(entry)
    };
    match bar {
        Some(bar) => bar.suspend(|| println!("{line}")),
        None => println!("{line}"),
    }
}

/// Moves the bar along the training events.
fn track(entry: &TrainingJobLogEntry, bar: &ProgressBar) {
    let data = &entry.data;
    match data.get("event").and_then(|e| e.as_str()) {
        Some("training_start") => {
            if let Some(total) = data.get("total_steps").and_then(|t| t.as_u64()) {
                bar.set_length(total);
            }
            if let Some(start) = data.get("start_step").and_then(|t| t.as_u64()) {
                bar.set_position(start);
            }
        }
        Some("step_complete") => {
            if let Some(step) = data.get("step").and_then(|s| s.as_u64()) {
                bar.set_position(step);
            }
            if let Some(loss) = data.get("train/loss").and_then(|l| l.as_f64()) {
                bar.set_message(format!("loss {loss:.4}"));
            }
        }
        _ => {}
    }
}

pub async fn follow(
    client: &dn_client::Client,
    org: &str,
    ws: &str,
    id: &str,
    json: bool,
) -> Result<i32> {
    let bar = (output::stderr_is_terminal() && !json).then(|| {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template("{elapsed} [{bar:30}] step {pos}/{len} {msg}")
                .expect("valid template"),
        );
        bar
    });
    let mut after = 0;
    let mut failures = 0;
    loop {
        let mut stream = match client.log_stream(org, ws, id, after).await {
            Ok(stream) => {
                failures = 0;
                stream
            }
            Err(e) if e.status().is_some() || failures >= MAX_RECONNECTS => return Err(e.into()),
            Err(_) => {
                failures += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        while let Ok(Some(event)) = stream.next().await {
            match event.event.as_str() {
                "log" => {
                    let entry: TrainingJobLogEntry = serde_json::from_str(&event.data)?;
                    after = event.id.unwrap_or(after);
                    print_entry(&entry, &event.data, json, bar.as_ref());
                    if let Some(bar) = &bar {
                        track(&entry, bar);
                    }
                }
                "end" => {
                    if let Some(bar) = &bar {
                        bar.finish_and_clear();
                    }
                    eprintln!("{id} {}", event.data);
                    return Ok(if event.data == "completed" {
                        0
                    } else {
                        EXIT_NOT_COMPLETED
                    });
                }
                _ => {}
            }
        }
        // Closed by the server (it does so every minute) or dropped: continue after the last entry.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
