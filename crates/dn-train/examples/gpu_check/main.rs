//! The GPU check, in one binary that `scripts/gpu/build.sh` builds with `--features cuda` and
//! `scripts/gpu/check.sh` runs on a GPU machine: seconds of environment checks first (`preflight`), then
//! CUDA bf16 against the CPU engine in f32 (`parity`), training with checkpoints and a resume
//! (`training`), and the speed and memory of a Llama-3.1-8B-shaped model extrapolated from a few random
//! layers (`throughput`). Each part reports `ok` and its figures; a part that fails reports its error
//! and the others still run. The JSON is written after every part, so a part that hangs or crashes
//! loses nothing before it.
//!
//! `gpu_check [--out FILE] [--layers 2,4] [--seq 2048] [--batch 8] [--steps 4] [--peak-tflops 989]
//! [--only preflight,...] [--skip parity,training,throughput] [--device cuda] [--small-layers 30]`; a
//! dry run on the CPU: `--device cpu --small-layers 2 --layers 1,2 --seq 256 --batch 2 --steps 2`.

mod parity;
mod preflight;
mod random;
mod throughput;
mod training;

use std::time::Instant;

use dn_train::{DeviceSpec, available_memory, device_label, select_device};
use serde_json::{Value, json};

struct Args {
    out: Option<String>,
    skip: Vec<String>,
    /// Run only these parts (empty: all).
    only: Vec<String>,
    device: DeviceSpec,
    /// Layers of the SmolLM2-shaped model of the parity and training parts.
    small_layers: usize,
    throughput: throughput::Settings,
}

fn parse() -> Result<Args, String> {
    let mut args = Args {
        out: None,
        skip: Vec::new(),
        only: Vec::new(),
        device: DeviceSpec::Cuda(0),
        small_layers: 30,
        throughput: throughput::Settings {
            layers: vec![2, 4],
            seq: 2048,
            batch: 8,
            steps: 4,
            peak_tflops: 989.0,
        },
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        let number = |v: String| v.parse::<usize>().map_err(|e| format!("{flag} {v}: {e}"));
        let t = &mut args.throughput;
        match flag.as_str() {
            "--out" => args.out = Some(value()?),
            "--device" => args.device = DeviceSpec::parse(&value()?).map_err(|e| e.to_string())?,
            "--small-layers" => args.small_layers = number(value()?)?,
            "--skip" => args.skip = value()?.split(',').map(str::to_owned).collect(),
            "--only" => args.only = value()?.split(',').map(str::to_owned).collect(),
            "--layers" => {
                t.layers = value()?
                    .split(',')
                    .map(|v| number(v.to_owned()))
                    .collect::<Result<_, _>>()?
            }
            "--seq" => t.seq = number(value()?)?,
            "--batch" => t.batch = number(value()?)?,
            "--steps" => t.steps = number(value()?)? as u64,
            "--peak-tflops" => {
                t.peak_tflops = value()?.parse().map_err(|e| format!("{flag}: {e}"))?
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if let Some(unknown) = args
        .only
        .iter()
        .chain(&args.skip)
        .find(|p| !PARTS.contains(&p.as_str()))
    {
        return Err(format!(
            "unknown part {unknown:?} (parts: {})",
            PARTS.join(", ")
        ));
    }
    if args.throughput.layers.len() < 2 || args.throughput.steps < 2 {
        return Err("--layers needs two counts and --steps at least 2".into());
    }
    Ok(args)
}

/// The parts, in the order they run.
const PARTS: [&str; 4] = ["preflight", "parity", "training", "throughput"];

fn part(name: &str, f: impl FnOnce() -> dn_train::Result<Value>) -> Value {
    eprintln!("gpu_check: {name}...");
    let started = Instant::now();
    let mut value = match f() {
        Ok(v) => v,
        Err(e) => json!({"ok": false, "error": e.to_string()}),
    };
    value["wall_seconds"] = json!(started.elapsed().as_secs_f64());
    eprintln!("gpu_check: {name}: {value}");
    value
}

fn main() {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("gpu_check: {e}");
            std::process::exit(2);
        }
    };
    let mut report = json!({"ok": false, "complete": false});
    let device = match select_device(args.device) {
        Ok(d) => d,
        Err(e) => {
            report["environment"] = json!({"error": e.to_string()});
            finish(&args, &report);
            std::process::exit(1);
        }
    };
    let scratch = tempfile::tempdir().expect("a scratch directory");
    report["environment"] = json!({
        "device": device_label(&device),
        "free_bytes_at_start": available_memory(&device),
        "cuda": dn_train::cuda_report(),
    });
    let small = args.small_layers;
    let mut ok = true;
    for name in PARTS {
        let wanted = (args.only.is_empty() || args.only.iter().any(|p| p == name))
            && !args.skip.iter().any(|p| p == name);
        if !wanted {
            report[name] = json!({"skipped": true});
            continue;
        }
        let value = part(name, || match name {
            "preflight" => preflight::run(&device),
            "parity" => parity::run(&device, small),
            "training" => training::run(&device, small, scratch.path()),
            _ => throughput::run(&device, &args.throughput),
        });
        ok &= value["ok"] == json!(true);
        report[name] = value;
        report["ok"] = json!(ok);
        save(&args, &report);
    }
    report["complete"] = json!(true);
    finish(&args, &report);
    std::process::exit(if ok { 0 } else { 1 });
}

/// The report to `--out`, replaced whole through a temporary file (a reader never sees half of it).
fn save(args: &Args, report: &Value) {
    let Some(out) = &args.out else {
        return;
    };
    let text = serde_json::to_string_pretty(report).expect("JSON");
    let partial = format!("{out}.partial");
    if let Err(e) = std::fs::write(&partial, text).and_then(|()| std::fs::rename(&partial, out)) {
        eprintln!("gpu_check: cannot write {out}: {e}");
    }
}

/// The final report, to `--out` and stdout.
fn finish(args: &Args, report: &Value) {
    save(args, report);
    println!("{}", serde_json::to_string_pretty(report).expect("JSON"));
}
