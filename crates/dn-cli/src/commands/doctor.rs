//! `dn doctor`: what this node can do. The device a worker would train on and why (each CUDA library and
//! the file it resolved to, the driver's CUDA version, its GPUs, free device memory), the host's memory
//! and cores, the data dir and the hub cache. Exit status 1 when the device asked for cannot be used.

use std::path::Path;

use anyhow::Result;
use dn_train::{CudaReport, DeviceSpec, LibraryStatus};
use serde_json::{Value, json};

use crate::cli::DoctorArgs;
use crate::config::{FileConfig, data_dir};

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}

/// `(total, available)` bytes of host memory from /proc/meminfo.
fn host_memory() -> (Option<u64>, Option<u64>) {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .map(|kib| kib * 1024)
    };
    (field("MemTotal:"), field("MemAvailable:"))
}

/// Bytes free for this user on the file system holding `path` (its nearest existing ancestor).
fn free_disk(path: &Path) -> Option<u64> {
    let existing = path.ancestors().find(|p| p.exists())?;
    let c = std::ffi::CString::new(existing.as_os_str().as_encoded_bytes()).ok()?;
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a statvfs to fill.
    if unsafe { libc::statvfs(c.as_ptr(), &mut stat) } != 0 {
        return None;
    }
    Some(stat.f_bavail as u64 * stat.f_frsize as u64)
}

/// The device `spec` gives, as a worker picks it, with its free memory; or why it cannot be used.
fn device(spec: DeviceSpec, cuda: &CudaReport) -> Value {
    match dn_train::select_device(spec) {
        Ok(device) => {
            let label = dn_train::device_label(&device);
            let why = if device.is_cuda() {
                "the driver, a GPU and the CUDA libraries are usable".to_string()
            } else if spec == DeviceSpec::Cpu {
                "asked for".to_string()
            } else {
                cuda.unusable
                    .clone()
                    .unwrap_or_else(|| "the GPU did not start".into())
            };
            json!({"spec": spec.to_string(), "device": label, "why": why,
                   "free_bytes": dn_train::available_memory(&device),
                   "warning": dn_train::device_warning(spec)})
        }
        Err(e) => json!({"spec": spec.to_string(), "device": null, "error": e.to_string()}),
    }
}

pub fn run(args: &DoctorArgs, as_json: bool) -> Result<i32> {
    let file = FileConfig::load(args.store.config.as_deref())?;
    let spec = args.device.or(file.device).unwrap_or_default();
    let cuda = dn_train::cuda_report();
    let device = device(spec, cuda);
    let (total, available) = host_memory();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let data = data_dir(&args.store, &file);
    let hub = dn_model::hub::hub_cache_dir();
    let models = hub
        .is_dir()
        .then(|| dn_model::inventory::hub_cache_models(&hub).len());
    let report = json!({
        "dn_version": env!("CARGO_PKG_VERSION"),
        "device": device,
        "cuda": cuda,
        "host": {"cores": cores, "memory_total_bytes": total, "memory_available_bytes": available},
        "data_dir": {"path": data, "exists": data.is_dir(), "disk_free_bytes": free_disk(&data)},
        "hub_cache": {"path": hub, "exists": hub.is_dir(), "models": models},
    });
    if as_json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_text(&report, cuda);
    }
    Ok(if device["error"].is_null() { 0 } else { 1 })
}

fn library_line(status: &LibraryStatus) -> String {
    match (&status.file, &status.path, &status.error) {
        (Some(file), Some(path), _) => format!("{file} -> {}", path.display()),
        (_, _, Some(error)) => format!("MISSING: {error}"),
        _ => "not probed".into(),
    }
}

fn print_text(report: &Value, cuda: &CudaReport) {
    let d = &report["device"];
    let text = |v: &Value| v.as_str().unwrap_or("").to_owned();
    match d["device"].as_str() {
        Some(label) => {
            let free = d["free_bytes"]
                .as_u64()
                .map_or(String::new(), |b| format!(", {} free", gib(b)));
            println!(
                "device      {} -> {label}{free} ({})",
                text(&d["spec"]),
                text(&d["why"])
            );
        }
        None => {
            let error = text(&d["error"]);
            println!("device      {}", error.trim_start_matches("device: "));
        }
    }
    if let Some(warning) = d["warning"].as_str() {
        println!("warning     {warning}");
    }
    if !cuda.built_with_cuda {
        println!("cuda        not in this build (cargo feature `cuda`)");
    }
    if let Some(driver) = &cuda.driver {
        let version = cuda
            .driver_cuda_version
            .as_ref()
            .map_or(String::new(), |v| format!(" (CUDA {v})"));
        println!("driver      {}{version}", library_line(driver));
    }
    for gpu in &cuda.gpus {
        println!(
            "gpu {:<7} {}, compute {}, {}",
            gpu.ordinal,
            gpu.name,
            gpu.compute_capability,
            gib(gpu.total_bytes)
        );
    }
    for library in &cuda.libraries {
        println!("{:<11} {}", library.name, library_line(library));
    }
    let host = &report["host"];
    let memory = |k: &str| host[k].as_u64().map_or("?".into(), gib);
    println!(
        "host        {} cores, {} available of {}",
        host["cores"],
        memory("memory_available_bytes"),
        memory("memory_total_bytes")
    );
    let data = &report["data_dir"];
    let state = if data["exists"] == json!(true) {
        ""
    } else {
        " (not created yet)"
    };
    let free = data["disk_free_bytes"]
        .as_u64()
        .map_or(String::new(), |b| format!(", {} free on its disk", gib(b)));
    println!("data dir    {}{state}{free}", text(&data["path"]));
    let hub = &report["hub_cache"];
    let models = hub["models"]
        .as_u64()
        .map_or(" (not created yet)".into(), |n| format!(" ({n} model(s))"));
    println!("hub cache   {}{models}", text(&hub["path"]));
}
