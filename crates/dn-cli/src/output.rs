//! Printing: one summary line per job, or indented JSON with --json.

use std::io::IsTerminal;

use anyhow::Result;
use dn_types::TrainingJob;
use serde::Serialize;

pub fn print_json<T: Serialize>(value: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// `{id} {status} {name or backend/trainer_type}`, as the reference CLI prints a job.
pub fn summary(job: &TrainingJob) -> String {
    let name = job.name.clone().unwrap_or_else(|| {
        let backend = serde_json::to_value(job.backend).unwrap_or_default();
        let trainer = serde_json::to_value(job.trainer_type).unwrap_or_default();
        format!(
            "{}/{}",
            backend.as_str().unwrap_or("?"),
            trainer.as_str().unwrap_or("?")
        )
    });
    format!("{} {} {}", job.id, job.status, name)
}

pub fn print_job(job: &TrainingJob, json: bool) -> Result<()> {
    if json {
        return print_json(job);
    }
    println!("{}", summary(job));
    Ok(())
}

/// `step 3/100 loss 1.234`, from what the worker reports in the job's metrics.
pub fn progress(job: &TrainingJob) -> String {
    let mut parts = vec![job.status.to_string()];
    let step = job.metrics.get("train/steps").and_then(|v| v.as_i64());
    let total = job
        .metrics
        .get("train/total_steps")
        .or_else(|| job.config.get("steps"))
        .and_then(|v| v.as_i64());
    match (step, total) {
        (Some(s), Some(t)) => parts.push(format!("step {s}/{t}")),
        (Some(s), None) => parts.push(format!("step {s}")),
        _ => {}
    }
    if let Some(loss) = job.metrics.get("train/loss_last").and_then(|v| v.as_f64()) {
        parts.push(format!("loss {loss:.4}"));
    }
    parts.join(" ")
}

/// Characters of a sparkline at most.
const SPARK_WIDTH: usize = 40;

/// The train loss so far as a text sparkline, `▇▆▅▃▂▁ 2.3101 -> 1.0502 (12 steps)`: each character the
/// mean of its share of the steps, scaled between the lowest and highest; `None` before the first step.
pub fn loss_sparkline(job: &TrainingJob) -> Option<String> {
    let losses: Vec<f64> = job
        .metrics
        .get("train/loss")?
        .as_array()?
        .iter()
        .filter_map(|v| v.as_f64())
        .filter(|v| v.is_finite())
        .collect();
    let (first, last) = (*losses.first()?, *losses.last()?);
    Some(format!(
        "{} {first:.4} -> {last:.4} ({} steps)",
        sparkline(&losses, SPARK_WIDTH),
        losses.len()
    ))
}

/// `values` in at most `width` block characters.
pub fn sparkline(values: &[f64], width: usize) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    if values.is_empty() || width == 0 {
        return String::new();
    }
    let cells = values.len().min(width);
    let means: Vec<f64> = (0..cells)
        .map(|c| {
            let (start, end) = (c * values.len() / cells, (c + 1) * values.len() / cells);
            values[start..end].iter().sum::<f64>() / (end - start) as f64
        })
        .collect();
    let (low, high) = means
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| {
            (l.min(*v), h.max(*v))
        });
    means
        .iter()
        .map(|v| {
            let share = if high > low {
                (v - low) / (high - low)
            } else {
                0.5
            };
            BARS[((share * 7.0).round() as usize).min(7)]
        })
        .collect()
}

pub fn stderr_is_terminal() -> bool {
    std::io::stderr().is_terminal()
}

#[cfg(test)]
mod tests {
    use super::sparkline;

    #[test]
    fn a_falling_loss_draws_a_falling_line_within_its_width() {
        assert_eq!(sparkline(&[3.0, 2.0, 1.0], 40), "█▅▁");
        let long: Vec<f64> = (0..400).map(|i| 400.0 - i as f64).collect();
        let line = sparkline(&long, 40);
        assert_eq!(line.chars().count(), 40);
        assert!(line.starts_with('█') && line.ends_with('▁'), "{line}");
        assert_eq!(sparkline(&[1.5, 1.5], 40), "▅▅");
        assert_eq!(sparkline(&[], 40), "");
    }
}
