//! `dn model merge` (any PEFT LoRA adapter into its base) and `dn train export` (a job's checkpoint):
//! the merged model as a Hugging Face model directory (dn_train::merge_adapter) or a llama.cpp GGUF file
//! (dn_train::export_gguf). A `.gguf` base is imported into a temporary model directory first.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use dn_train::{DType, MergeSummary, merge_adapter};

use crate::cli::ExportArgs;
use crate::connection::Connection;

/// `bf16 | f16 | f32`, or the base's own dtype (config.json's `torch_dtype` / `dtype`; f32 otherwise).
fn output_dtype(asked: Option<&str>, base_dir: &Path) -> Result<DType> {
    match asked {
        None => Ok(dn_train::stored_dtype(base_dir)?),
        Some("bf16") => Ok(DType::BF16),
        Some("f16") => Ok(DType::F16),
        Some("f32") => Ok(DType::F32),
        Some(other) => bail!("--dtype {other:?}: one of bf16, f16, f32"),
    }
}

/// What to write: a model directory, or a GGUF file (q8_0 when `quant` says so).
#[derive(Debug, Clone)]
pub struct Target {
    pub format: String,
    pub dtype: Option<String>,
    pub quant: Option<String>,
}

/// What was written, for the report.
pub enum Written {
    Directory(MergeSummary),
    Gguf(dn_train::GgufSummary),
}

fn write(base_dir: &Path, adapter: &Path, out: &Path, target: &Target) -> Result<Written> {
    let dtype = output_dtype(target.dtype.as_deref(), base_dir)?;
    if target.format == "gguf" {
        let kind = match (target.quant.as_deref(), dtype) {
            (Some("q8_0"), _) => dn_train::TensorType::Q8_0,
            (Some(other), _) => bail!("--quant {other:?}: q8_0 is the one written"),
            (None, DType::BF16) => dn_train::TensorType::BF16,
            (None, DType::F16) => dn_train::TensorType::F16,
            (None, _) => dn_train::TensorType::F32,
        };
        return Ok(Written::Gguf(dn_train::export_gguf(
            base_dir, adapter, out, kind,
        )?));
    }
    if target.quant.is_some() {
        bail!("--quant applies to --format gguf");
    }
    Ok(Written::Directory(merge_adapter(
        base_dir,
        adapter,
        out,
        dtype,
        dn_train::MAX_SHARD_BYTES,
    )?))
}

/// Merges `adapter` into the model `base` (a directory, a `.gguf` file or a hub id) and writes `out`.
pub fn merge(base: &str, adapter: &Path, out: &Path, target: &Target) -> Result<Written> {
    let path = dn_model::resolve_model_for_training(base)
        .with_context(|| format!("base model {base} is not available here"))?;
    if path.is_dir() {
        return write(&path, adapter, out, target);
    }
    let imported = PathBuf::from(format!("{}.import", out.display()));
    if imported.exists() {
        std::fs::remove_dir_all(&imported)
            .with_context(|| format!("cannot clear {}", imported.display()))?;
    }
    let result = dn_model::import_gguf(&path, &imported)
        .map_err(anyhow::Error::from)
        .and_then(|_| write(&imported, adapter, out, target));
    let _ = std::fs::remove_dir_all(&imported);
    result
}

fn report(written: &Written, out: &Path, json: bool) -> Result<()> {
    let (tensors, merged, files, bytes) = match written {
        Written::Directory(s) => (s.tensors, s.merged, s.shards.clone(), s.bytes),
        Written::Gguf(s) => (s.tensors, s.merged, vec![out.to_path_buf()], s.bytes),
    };
    if json {
        return crate::output::print_json(&serde_json::json!({
            "out": out, "tensors": tensors, "merged": merged, "files": files, "bytes": bytes,
        }));
    }
    println!(
        "wrote {}: {tensors} tensors ({merged} with a LoRA pair merged) in {} file(s), {bytes} bytes",
        out.display(),
        files.len(),
    );
    Ok(())
}

/// `dn model merge --base M --adapter DIR --out PATH [--dtype D]`.
pub async fn merge_command(
    base: String,
    adapter: PathBuf,
    out: PathBuf,
    target: Target,
    json: bool,
) -> Result<i32> {
    let path = out.clone();
    let written =
        tokio::task::spawn_blocking(move || merge(&base, &adapter, &out, &target)).await??;
    report(&written, &path, json)?;
    Ok(0)
}

/// `dn train export JOB --out PATH [--format F]`: the job's checkpoint (fetched through the API)
/// merged into its base model.
pub async fn export(args: ExportArgs, conn: &Connection, json: bool) -> Result<i32> {
    let client = conn.client()?;
    let job = client
        .get_job(&conn.organization, &conn.workspace, &args.job_id)
        .await?;
    let adapter =
        super::sample::fetch_checkpoint(&client, conn, &job, args.checkpoint.as_deref()).await?;
    let out = args.out.clone();
    let target = Target {
        format: args.target.format.clone(),
        dtype: args.target.dtype.clone(),
        quant: args.target.quant.clone(),
    };
    let written =
        tokio::task::spawn_blocking(move || merge(&job.model, &adapter, &args.out, &target))
            .await??;
    report(&written, &out, json)?;
    Ok(0)
}
