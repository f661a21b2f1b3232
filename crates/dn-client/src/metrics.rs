//! A job's metrics as a table, one row per optimizer step, from its log: each `step_complete` entry's
//! metrics and each `eval_complete`'s at its step (a step redone after a resume keeps its last report),
//! written as CSV or JSON (`dn train metrics`).

use std::collections::BTreeMap;

use dn_types::TrainingJobLogList;
use serde_json::{Map, Value};

/// Columns in the order they are written; any other scalar a step reports follows, by name.
const KNOWN: &[&str] = &[
    "step",
    "epoch",
    "train/loss",
    "train/learning_rate",
    "train/grad_norm",
    "train/num_sequences",
    "train/num_tokens",
    "train/num_supervised_tokens",
    "train/step_seconds",
    "train/tokens_per_second",
    "train/model_tflops_per_second",
    "train/mfu",
    "eval/loss",
    "eval/num_examples",
    "eval/num_tokens",
];

/// Rows of scalars by step.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsTable {
    pub columns: Vec<String>,
    pub rows: Vec<Map<String, Value>>,
}

impl MetricsTable {
    pub fn from_logs(logs: &TrainingJobLogList) -> Self {
        let mut by_step: BTreeMap<u64, Map<String, Value>> = BTreeMap::new();
        for entry in &logs.items {
            let event = entry.data.get("event").and_then(Value::as_str);
            if !matches!(event, Some("step_complete" | "eval_complete")) {
                continue;
            }
            let Some(step) = entry.data.get("step").and_then(Value::as_u64) else {
                continue;
            };
            let row = by_step.entry(step).or_default();
            if event == Some("step_complete") {
                // A step reported again (redone after a resume) replaces its training scalars.
                row.retain(|k, _| k.starts_with("eval/"));
            }
            // The metrics (`train/...`, `eval/...`), not the log's bookkeeping (`seq`, `attempt`).
            for (key, value) in &entry.data {
                if value.is_number() && (key.contains('/') || key == "step" || key == "epoch") {
                    row.insert(key.clone(), value.clone());
                }
            }
        }
        let mut extra: Vec<String> = by_step
            .values()
            .flat_map(|row| row.keys())
            .filter(|k| !KNOWN.contains(&k.as_str()))
            .cloned()
            .collect();
        extra.sort();
        extra.dedup();
        let present = |k: &&&str| by_step.values().any(|row| row.contains_key(**k));
        let columns = KNOWN
            .iter()
            .filter(present)
            .map(|k| k.to_string())
            .chain(extra)
            .collect();
        MetricsTable {
            columns,
            rows: by_step.into_values().collect(),
        }
    }

    /// The table as CSV: a header of column names, then one line per step (empty where a step has no
    /// value).
    pub fn to_csv(&self) -> String {
        let mut out = self.columns.join(",");
        out.push('\n');
        for row in &self.rows {
            let cells: Vec<String> = self
                .columns
                .iter()
                .map(|c| row.get(c).map(Value::to_string).unwrap_or_default())
                .collect();
            out.push_str(&cells.join(","));
            out.push('\n');
        }
        out
    }

    /// The table as JSON: `{"columns": [...], "rows": [{column: value, ...}, ...]}`.
    pub fn to_json(&self) -> Value {
        serde_json::json!({"columns": self.columns, "rows": self.rows})
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dn_types::{LogLevel, TrainingJobLogEntry};
    use serde_json::json;

    fn entry(data: Value) -> TrainingJobLogEntry {
        TrainingJobLogEntry {
            timestamp: "2026-12-05T12:00:00Z".parse().unwrap(),
            level: LogLevel::Info,
            message: String::new(),
            data: data.as_object().unwrap().clone(),
        }
    }

    #[test]
    fn steps_and_evals_become_rows_by_step() {
        let logs = TrainingJobLogList {
            items: vec![
                entry(json!({"event": "training_start", "total_steps": 2})),
                entry(
                    json!({"event": "eval_complete", "step": 0, "eval/loss": 3.0,
                             "router_load": [[1, 2]]}),
                ),
                entry(
                    json!({"event": "step_complete", "step": 1, "train/loss": 2.5,
                             "train/tokens_per_second": 100.0, "seq": 7, "attempt": 1}),
                ),
                entry(
                    json!({"event": "step_complete", "step": 2, "train/loss": 2.4,
                             "train/tokens_per_second": 90.0, "custom/x": 1}),
                ),
                // Step 2 redone after a resume: its last report counts.
                entry(
                    json!({"event": "step_complete", "step": 2, "train/loss": 2.25,
                             "train/tokens_per_second": 95.0}),
                ),
                entry(json!({"event": "eval_complete", "step": 2, "eval/loss": 2.0})),
            ],
        };
        let table = MetricsTable::from_logs(&logs);
        assert_eq!(
            table.columns,
            ["step", "train/loss", "train/tokens_per_second", "eval/loss"]
        );
        assert_eq!(
            table.to_csv(),
            "step,train/loss,train/tokens_per_second,eval/loss\n0,,,3.0\n1,2.5,100.0,\n2,2.25,95.0,2.0\n"
        );
        assert_eq!(table.to_json()["rows"][2]["eval/loss"], json!(2.0));
    }
}
