//! `dn data preview`: what the trainer will see, token by token.

use std::io::IsTerminal;
use std::path::Path;

use anyhow::{Context, Result, bail};
use dn_render::{Example, Tokenizer};
use dn_types::ArtifactRef;
use dn_worker::{DataFile, PrepareRequest};

use crate::cli::{ConnectionArgs, PreviewArgs};
use crate::connection::Connection;

/// The source's data files: the local `--file`, or the pushed dataset's files downloaded into `scratch`.
async fn source_files(
    args: &PreviewArgs,
    connection: &ConnectionArgs,
    scratch: &Path,
) -> Result<Vec<DataFile>> {
    if let Some(path) = &args.file {
        let format = dn_data::format_of_path(path)?;
        return Ok(vec![DataFile {
            label: path.display().to_string(),
            format,
            path: std::path::absolute(path)
                .with_context(|| format!("cannot resolve {}", path.display()))?,
        }]);
    }
    let (text, flag) = match (&args.dataset, &args.trajectory_dataset) {
        (Some(d), _) => (d, "--dataset"),
        (None, Some(t)) => (t, "--trajectory-dataset"),
        (None, None) => bail!("pass --file, --dataset or --trajectory-dataset"),
    };
    let reference = ArtifactRef::parse(text, flag)?;
    let conn = Connection::resolve(connection)?;
    let client = conn.client()?;
    let org = reference.org_or(&conn.organization);
    let manifest = client
        .get_dataset(org, &reference.name, &reference.version)
        .await?;
    dn_data::readable(manifest.format, &reference.to_string())?;
    let mut files = Vec::new();
    for (i, file) in manifest.data_files.iter().enumerate() {
        let bytes = client
            .dataset_file(org, &reference.name, &reference.version, file)
            .await?;
        let path = scratch.join(format!("file-{i}"));
        std::fs::write(&path, &bytes)
            .with_context(|| format!("cannot write {}", path.display()))?;
        files.push(DataFile {
            label: format!("{reference}/{file}"),
            format: manifest.format,
            path,
        });
    }
    Ok(files)
}

async fn system_prompt(args: &PreviewArgs, connection: &ConnectionArgs) -> Result<String> {
    if let Some(path) = &args.system_prompt_file {
        return Ok(std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?
            .trim()
            .to_owned());
    }
    let Some(text) = &args.capability else {
        return Ok(String::new());
    };
    let reference = ArtifactRef::parse(text, "--capability")?;
    let conn = Connection::resolve(connection)?;
    let manifest = conn
        .client()?
        .get_capability(
            reference.org_or(&conn.organization),
            &reference.name,
            &reference.version,
        )
        .await?;
    Ok(manifest.system_prompt)
}

pub async fn preview(args: PreviewArgs, connection: &ConnectionArgs, json: bool) -> Result<i32> {
    let model = super::local::absolute_if_local(&args.model);
    let model_path = {
        let model = model.clone();
        tokio::task::spawn_blocking(move || dn_model::resolve_model_path(&model)).await??
    };
    let scratch = tempfile::tempdir().context("cannot create a scratch directory")?;
    let files = source_files(&args, connection, scratch.path()).await?;
    let request = PrepareRequest {
        model_path: model_path.clone(),
        now: chrono::Utc::now().fixed_offset(),
        max_sequence_length: args.max_sequence_length,
        system_prompt: system_prompt(&args, connection).await?,
        train_on: args.train_on,
        groups: vec![files],
        eval_samples: 0,
        max_conversations: Some(args.limit),
    };
    // Decoding and rendering what users pushed happens where a job's would: in a child process under
    // a memory limit (a runaway template fails the preview, naming the rows, not this process).
    let sandbox = crate::config::sandbox(&args.prepare, &crate::config::FileConfig::default())?;
    let child_scratch = scratch.path().join("prepare");
    std::fs::create_dir_all(&child_scratch)?;
    let prepared = dn_worker::prepare_group(sandbox.as_ref(), request, &child_scratch)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let tokenizer =
        tokio::task::spawn_blocking(move || dn_render::load_tokenizer(&model_path)).await??;
    let model_type = prepared.model_type.as_deref();
    let family = prepared
        .family
        .as_deref()
        .unwrap_or("not a family dn trains");
    eprintln!(
        "model {} (family: {family}, model_type: {})",
        args.model,
        model_type.unwrap_or("unknown")
    );
    for example in &prepared.examples {
        if json {
            println!(
                "{}",
                serde_json::json!({
                    "input_ids": example.input_ids,
                    "loss_mask": example.loss_mask,
                    "num_tokens": example.input_ids.len(),
                    "truncated": example.truncated,
                })
            );
        } else {
            println!("{}\n", highlighted(&tokenizer, example)?);
        }
    }
    let row_errors = &prepared.skipped_rows;
    for error in row_errors.iter().take(10) {
        eprintln!("skipped: {error}");
    }
    for error in &prepared.errors {
        eprintln!("failed: {error}");
    }
    if let Some(limit) = &prepared.template_limit {
        anyhow::bail!("chat template: {limit}");
    }
    let s = &prepared.stats;
    for note in s.system_notes() {
        eprintln!("{note}");
    }
    eprintln!(
        "rows {} (skipped {}), previewed {} conversation(s): {} example(s), {} tokens, {} supervised, \
         {} truncated, {} dropped (no supervised token), {} failed",
        prepared.rows_read,
        row_errors.len(),
        s.conversations,
        s.examples,
        s.tokens,
        s.supervised_tokens,
        s.truncated,
        s.dropped_no_supervised,
        s.failed
    );
    Ok(if prepared.examples.is_empty() { 1 } else { 0 })
}

/// The example's text with supervised tokens in green (on a terminal) or between ⟦ and ⟧.
fn highlighted(tokenizer: &Tokenizer, example: &Example) -> Result<String> {
    let color = std::io::stdout().is_terminal();
    let (open, close) = if color {
        ("\x1b[1;32m", "\x1b[0m")
    } else {
        ("⟦", "⟧")
    };
    let mut out = String::new();
    let mut start = 0;
    while start < example.input_ids.len() {
        let supervised = example.loss_mask[start];
        let end = (start..example.input_ids.len())
            .find(|i| example.loss_mask[*i] != supervised)
            .unwrap_or(example.input_ids.len());
        let text = tokenizer
            .decode(&example.input_ids[start..end], false)
            .map_err(|e| anyhow::anyhow!("cannot decode tokens: {e}"))?;
        if supervised == 1 {
            out.push_str(open);
            out.push_str(&text);
            out.push_str(close);
        } else {
            out.push_str(&text);
        }
        start = end;
    }
    Ok(out)
}
