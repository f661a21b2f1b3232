//! `dn model merge` (any PEFT LoRA adapter into its base) and `dn train export` (a job's checkpoint):
//! the merged model as a Hugging Face model directory (dn_train::merge_adapter). A `.gguf` base is
//! imported into a temporary model directory first.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use dn_train::{DType, MergeSummary, merge_adapter};

use crate::cli::ExportArgs;
use crate::connection::Connection;

/// `bf16 | f16 | f32`, or the base's own dtype (config.json's `torch_dtype` / `dtype`; f32 otherwise).
fn output_dtype(asked: Option<&str>, base_dir: &Path) -> Result<DType> {
    let name = match asked {
        Some(name) => name.to_owned(),
        None => {
            let config: serde_json::Value = std::fs::read_to_string(base_dir.join("config.json"))
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or_default();
            let stored = ["torch_dtype", "dtype"]
                .iter()
                .find_map(|k| config.get(*k).and_then(|v| v.as_str()))
                .unwrap_or("float32");
            match stored {
                "bfloat16" => "bf16",
                "float16" => "f16",
                _ => "f32",
            }
            .to_owned()
        }
    };
    match name.as_str() {
        "bf16" => Ok(DType::BF16),
        "f16" => Ok(DType::F16),
        "f32" => Ok(DType::F32),
        other => bail!("--dtype {other:?}: one of bf16, f16, f32"),
    }
}

/// Merges `adapter` into the model `base` (a directory, a `.gguf` file or a hub id) and writes `out`.
pub fn merge(base: &str, adapter: &Path, out: &Path, dtype: Option<&str>) -> Result<MergeSummary> {
    let path = dn_render::resolve_model_for_training(base)
        .with_context(|| format!("base model {base} is not available here"))?;
    if path.is_dir() {
        let dtype = output_dtype(dtype, &path)?;
        return Ok(merge_adapter(
            &path,
            adapter,
            out,
            dtype,
            dn_train::MAX_SHARD_BYTES,
        )?);
    }
    let imported = PathBuf::from(format!("{}.import", out.display()));
    if imported.exists() {
        std::fs::remove_dir_all(&imported)
            .with_context(|| format!("cannot clear {}", imported.display()))?;
    }
    let result = dn_render::import_gguf(&path, &imported)
        .map_err(anyhow::Error::from)
        .and_then(|_| {
            let dtype = output_dtype(dtype, &imported)?;
            Ok(merge_adapter(
                &imported,
                adapter,
                out,
                dtype,
                dn_train::MAX_SHARD_BYTES,
            )?)
        });
    let _ = std::fs::remove_dir_all(&imported);
    result
}

fn report(summary: &MergeSummary, out: &Path, json: bool) -> Result<()> {
    if json {
        return crate::output::print_json(&serde_json::json!({
            "out": out, "tensors": summary.tensors, "merged": summary.merged,
            "shards": summary.shards, "bytes": summary.bytes,
        }));
    }
    println!(
        "wrote {}: {} tensors ({} with a LoRA pair merged) in {} shard(s), {} bytes",
        out.display(),
        summary.tensors,
        summary.merged,
        summary.shards.len(),
        summary.bytes
    );
    Ok(())
}

/// `dn model merge --base M --adapter DIR --out PATH [--dtype D]`.
pub async fn merge_command(
    base: String,
    adapter: PathBuf,
    out: PathBuf,
    dtype: Option<String>,
    json: bool,
) -> Result<i32> {
    let target = out.clone();
    let summary =
        tokio::task::spawn_blocking(move || merge(&base, &adapter, &out, dtype.as_deref()))
            .await??;
    report(&summary, &target, json)?;
    Ok(0)
}

/// `dn train export JOB --format merged --out PATH`: the job's checkpoint (fetched through the API)
/// merged into its base model.
pub async fn export(args: ExportArgs, conn: &Connection, json: bool) -> Result<i32> {
    let client = conn.client()?;
    let job = client
        .get_job(&conn.organization, &conn.workspace, &args.job_id)
        .await?;
    let adapter =
        super::sample::fetch_checkpoint(&client, conn, &job, args.checkpoint.as_deref()).await?;
    let out = args.out.clone();
    let summary = tokio::task::spawn_blocking(move || {
        merge(&job.model, &adapter, &args.out, args.dtype.as_deref())
    })
    .await??;
    report(&summary, &out, json)?;
    Ok(0)
}
