//! The node's training metrics for Prometheus: the job a worker is training, its step, loss, eval loss,
//! tokens/s, model TFLOP/s and MFU, and the process's resident memory, rendered in Prometheus' text format
//! (the `dn` binary serves it on `/metrics` at the worker's `metrics_listen` address: this crate serves no
//! HTTP).

use std::sync::{Arc, Mutex, PoisonError};

use dn_train::StepRecord;

/// What the running job last reported.
#[derive(Debug, Clone, Default)]
struct Current {
    job_id: String,
    step: u64,
    total_steps: u64,
    loss: Option<f64>,
    eval_loss: Option<f64>,
    tokens_per_second: Option<f64>,
    model_tflops_per_second: Option<f64>,
    mfu: Option<f64>,
    device_memory_used: Option<f64>,
}

/// The gauges a worker's runner updates and its `/metrics` endpoint reads.
pub struct TrainingGauges {
    worker_id: String,
    current: Mutex<Option<Current>>,
}

impl TrainingGauges {
    pub fn new(worker_id: impl Into<String>) -> Arc<Self> {
        Arc::new(TrainingGauges {
            worker_id: worker_id.into(),
            current: Mutex::new(None),
        })
    }

    fn update(&self, f: impl FnOnce(&mut Option<Current>)) {
        f(&mut self.current.lock().unwrap_or_else(PoisonError::into_inner));
    }

    pub(crate) fn started(&self, job_id: &str, start_step: u64, total_steps: u64) {
        self.update(|c| {
            *c = Some(Current {
                job_id: job_id.to_owned(),
                step: start_step,
                total_steps,
                ..Current::default()
            })
        });
    }

    pub(crate) fn step(&self, r: &StepRecord, peak_flops: Option<f64>) {
        self.update(|c| {
            if let Some(c) = c {
                let seconds = r.step_seconds.max(1e-9);
                c.step = r.step;
                c.loss = Some(r.loss);
                c.tokens_per_second = Some(r.num_tokens as f64 / seconds);
                c.model_tflops_per_second = Some(r.model_flops / seconds / 1e12);
                c.mfu = peak_flops.map(|p| r.model_flops / seconds / p);
                c.device_memory_used = r.device_memory_used.map(|b| b as f64);
            }
        });
    }

    pub(crate) fn eval(&self, loss: f64) {
        self.update(|c| {
            if let Some(c) = c {
                c.eval_loss = Some(loss);
            }
        });
    }

    pub(crate) fn finished(&self) {
        self.update(|c| *c = None);
    }

    /// The gauges in Prometheus' text exposition format.
    pub fn render(&self) -> String {
        let current = self
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let worker = escape(&self.worker_id);
        let mut out = String::new();
        let mut gauge = |name: &str, help: &str, labels: &str, value: f64| {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name}{{{labels}}} {value}\n"
            ));
        };
        let worker_label = format!("worker=\"{worker}\"");
        gauge(
            "dn_worker_training_active",
            "1 while the worker trains a job.",
            &worker_label,
            f64::from(u8::from(current.is_some())),
        );
        if let Some(rss) = resident_bytes() {
            gauge(
                "dn_worker_resident_memory_bytes",
                "Resident memory of the worker process.",
                &worker_label,
                rss as f64,
            );
        }
        let Some(c) = current else {
            return out;
        };
        let labels = format!("{worker_label},job_id=\"{}\"", escape(&c.job_id));
        gauge(
            "dn_worker_training_step",
            "Optimizer steps done in the running job.",
            &labels,
            c.step as f64,
        );
        gauge(
            "dn_worker_training_total_steps",
            "Optimizer steps the running job takes in all.",
            &labels,
            c.total_steps as f64,
        );
        let optional = [
            (
                "dn_worker_training_loss",
                "The last step's training loss.",
                c.loss,
            ),
            (
                "dn_worker_training_eval_loss",
                "The last evaluation's loss.",
                c.eval_loss,
            ),
            (
                "dn_worker_training_tokens_per_second",
                "Tokens per second of the last step.",
                c.tokens_per_second,
            ),
            (
                "dn_worker_training_model_tflops_per_second",
                "Model TFLOP/s of the last step (6N + 12LHQT per token).",
                c.model_tflops_per_second,
            ),
            (
                "dn_worker_training_mfu",
                "Model FLOPs utilization of the last step (of the device's peak).",
                c.mfu,
            ),
            (
                "dn_worker_device_memory_used_bytes",
                "The GPU's memory in use after the last step (all processes', as nvidia-smi counts it).",
                c.device_memory_used,
            ),
        ];
        for (name, help, value) in optional {
            if let Some(v) = value {
                gauge(name, help, &labels, v);
            }
        }
        out
    }
}

/// A label value with `\`, `"` and newlines escaped as the text format wants.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// This process's resident memory (Linux: `/proc/self/status`).
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_running_job_and_nothing_after_it() {
        let g = TrainingGauges::new("node\"1");
        assert!(
            g.render()
                .contains("dn_worker_training_active{worker=\"node\\\"1\"} 0")
        );
        g.started("job-1", 0, 10);
        let record = StepRecord {
            step: 3,
            epoch: 0,
            loss: 2.5,
            learning_rate: 1e-4,
            grad_norm: 1.0,
            num_sequences: 2,
            num_tokens: 100,
            num_supervised_tokens: 50,
            step_seconds: 0.5,
            model_flops: 1e12,
            device_memory_used: Some(3 << 30),
        };
        g.step(&record, Some(4e12));
        g.eval(2.25);
        let text = g.render();
        let labels = "{worker=\"node\\\"1\",job_id=\"job-1\"}";
        for line in [
            format!("dn_worker_training_step{labels} 3"),
            format!("dn_worker_training_total_steps{labels} 10"),
            format!("dn_worker_training_loss{labels} 2.5"),
            format!("dn_worker_training_eval_loss{labels} 2.25"),
            format!("dn_worker_training_tokens_per_second{labels} 200"),
            format!("dn_worker_training_model_tflops_per_second{labels} 2"),
            format!("dn_worker_training_mfu{labels} 0.5"),
            format!("dn_worker_device_memory_used_bytes{labels} 3221225472"),
        ] {
            assert!(text.contains(&line), "{line} in\n{text}");
        }
        g.finished();
        assert!(!g.render().contains("job-1"));
    }
}
