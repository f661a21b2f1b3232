//! `dn data preview`: what the trainer will see, token by token.

use std::io::IsTerminal;

use anyhow::{Context, Result, bail};
use dn_data::{Conversation, Error as DataError, Format, load_conversations};
use dn_render::{Example, ModelArtifacts, PrepareOptions, TrainOn, prepare};
use dn_types::ArtifactRef;

use crate::cli::{ConnectionArgs, PreviewArgs};
use crate::connection::Connection;

/// Rows of every data file of the source, with the bad rows reported.
async fn load_source(
    args: &PreviewArgs,
    connection: &ConnectionArgs,
) -> Result<(Vec<Conversation>, Vec<DataError>)> {
    if let Some(path) = &args.file {
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let loaded = load_conversations(
            &bytes,
            Format::from_path(path)?,
            &path.display().to_string(),
        )?;
        return Ok((loaded.conversations, loaded.errors));
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
    let format = Format::parse(&manifest.format, &reference.to_string())?;
    let (mut conversations, mut errors) = (Vec::new(), Vec::new());
    for file in &manifest.data_files {
        let bytes = client
            .dataset_file(org, &reference.name, &reference.version, file)
            .await?;
        let loaded = load_conversations(&bytes, format, &format!("{reference}/{file}"))?;
        conversations.extend(loaded.conversations);
        errors.extend(loaded.errors);
    }
    Ok((conversations, errors))
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
    let artifacts = ModelArtifacts::resolve(&super::local::absolute_if_local(&args.model))?;
    let (mut conversations, row_errors) = load_source(&args, connection).await?;
    let prompt = system_prompt(&args, connection).await?;
    let total_rows = conversations.len() + row_errors.len();
    conversations.truncate(args.limit);
    let prepared = prepare(
        &artifacts,
        conversations,
        &PrepareOptions {
            max_sequence_length: args.max_sequence_length,
            system_prompt: prompt,
            train_on: TrainOn::parse(&args.train_on).unwrap_or_default(),
        },
    );
    let family = artifacts
        .family()
        .map_or("not a family dn trains".to_owned(), |f| f.to_string());
    eprintln!(
        "model {} (family: {family}, model_type: {})",
        args.model,
        artifacts.model_type.as_deref().unwrap_or("unknown")
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
            println!("{}\n", highlighted(&artifacts, example)?);
        }
    }
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
        "rows {total_rows} (skipped {}), previewed {} conversation(s): {} example(s), {} tokens, {} supervised, \
         {} truncated, {} dropped (no supervised token), {} failed",
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
fn highlighted(artifacts: &ModelArtifacts, example: &Example) -> Result<String> {
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
        let text = artifacts
            .tokenizer
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
