//! `dn train sample JOB_ID`: completes prompts with a job's adapter (fetched through the API into the
//! cache) over its base model (a local path or a hub id, from the hub cache or downloaded), rendered with
//! the model's chat template and the job's capability system prompt as training rendered them (the
//! job's creation date for templates that print one). One prompt streams to stdout as it is generated.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use dn_data::{ChatMessage, Conversation, Role};
use dn_render::{ModelArtifacts, completion_prompt, decode};
use dn_train::{BaseModel, DType, Device, LoraConfig, LoraModel, SamplingOptions, generate};
use dn_types::{ArtifactRef, TrainingJob};
use serde_json::json;

use crate::cli::SampleArgs;
use crate::connection::Connection;

/// Conversations in a `--messages` file at most.
const MAX_CONVERSATIONS: usize = 64;
/// The largest `--messages` file read.
const MAX_MESSAGES_BYTES: u64 = 16 << 20;
/// The most new tokens one completion may ask for.
const MAX_TOKENS: usize = 32_768;

/// Where downloaded checkpoints are kept: `$XDG_CACHE_HOME/dn/checkpoints` or `~/.cache/dn/checkpoints`.
fn checkpoint_cache() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| ".".into())).join(".cache")
        });
    base.join("dn").join("checkpoints")
}

/// The checkpoint to use: the one asked for, else `final`, else the last one saved.
fn checkpoint_name(job: &TrainingJob, asked: Option<&str>) -> Result<String> {
    let names: Vec<&str> = job
        .artifacts
        .get("checkpoints")
        .and_then(|c| c.as_array())
        .map(|list| list.iter().filter_map(|c| c["name"].as_str()).collect())
        .unwrap_or_default();
    if let Some(name) = asked {
        if names.contains(&name) {
            return Ok(name.to_owned());
        }
        bail!(
            "training job {} has no checkpoint {name:?} (it has: {})",
            job.id,
            if names.is_empty() {
                "none".into()
            } else {
                names.join(", ")
            }
        );
    }
    if names.contains(&"final") {
        return Ok("final".into());
    }
    names.last().map(|n| (*n).to_owned()).with_context(|| {
        format!(
            "training job {} ({}) has no checkpoint yet: sample it once it has saved one (see \
             --checkpoint-interval), or sample the base model with --base",
            job.id,
            job.status.as_str()
        )
    })
}

/// The conversations to complete: `--prompt` as one user message, or each row of `--messages`.
fn conversations(args: &SampleArgs) -> Result<Vec<Conversation>> {
    if let Some(prompt) = &args.prompt {
        return Ok(vec![Conversation {
            messages: vec![ChatMessage::new(Role::User, prompt.clone())],
            ..Conversation::default()
        }]);
    }
    let path = args.messages.as_ref().expect("clap requires one of them");
    let size = std::fs::metadata(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .len();
    if size > MAX_MESSAGES_BYTES {
        bail!("{}: larger than 16 MiB", path.display());
    }
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let label = path.display().to_string();
    let rows = dn_data::read_rows(&bytes, dn_data::Format::Jsonl, &label)?;
    if rows.is_empty() {
        bail!("{label}: no conversation");
    }
    if rows.len() > MAX_CONVERSATIONS {
        bail!("{label}: more than {MAX_CONVERSATIONS} conversations");
    }
    rows.into_iter()
        .map(|(row, value)| {
            // A prompt needs no answer: the training data's "no assistant message" rule does not apply.
            dn_data::row_conversation(&value?)
                .map_err(|m| anyhow::anyhow!("{label}: row {row}: {m}"))
        })
        .collect()
}

/// The directory of the job's checkpoint `asked` (see [`checkpoint_name`]), downloaded into the cache
/// unless it is there already.
pub async fn fetch_checkpoint(
    client: &dn_client::Client,
    conn: &Connection,
    job: &TrainingJob,
    asked: Option<&str>,
) -> Result<PathBuf> {
    let name = checkpoint_name(job, asked)?;
    let dir = checkpoint_cache().join(&job.id).join(&name);
    if !dir.join(dn_train::ADAPTER_FILE).is_file() {
        client
            .download_checkpoint(&conn.organization, &conn.workspace, &job.id, &name, &dir)
            .await
            .with_context(|| format!("downloading checkpoint {name} of job {}", job.id))?;
    }
    Ok(dir)
}

/// The job, its adapter directory (downloaded unless `--base`) and the capability's system prompt.
async fn fetch(
    conn: &Connection,
    args: &SampleArgs,
) -> Result<(TrainingJob, Option<PathBuf>, String)> {
    let client = conn.client()?;
    let (org, ws) = (conn.organization.as_str(), conn.workspace.as_str());
    let job = client.get_job(org, ws, &args.job_id).await?;
    let adapter = if args.base {
        None
    } else {
        Some(fetch_checkpoint(&client, conn, &job, args.checkpoint.as_deref()).await?)
    };
    let system_prompt = if args.no_system_prompt {
        String::new()
    } else {
        let cap =
            ArtifactRef::from_parts(&job.capability.name, &job.capability.version, "capability")?;
        client
            .get_capability(cap.org_or(org), &cap.name, &cap.version)
            .await
            .with_context(|| format!("capability {cap} of job {}", job.id))?
            .system_prompt
    };
    Ok((job, adapter, system_prompt))
}

pub async fn sample(args: SampleArgs, conn: &Connection, json: bool) -> Result<i32> {
    if args.max_tokens == 0 || args.max_tokens > MAX_TOKENS {
        bail!("--max-tokens must be between 1 and {MAX_TOKENS}");
    }
    let conversations = conversations(&args)?;
    let (job, adapter, system_prompt) = fetch(conn, &args).await?;
    tokio::task::spawn_blocking(move || {
        complete(
            &args,
            &job,
            adapter.as_deref(),
            &system_prompt,
            &conversations,
            json,
        )
    })
    .await?
}

fn complete(
    args: &SampleArgs,
    job: &TrainingJob,
    adapter: Option<&Path>,
    system_prompt: &str,
    conversations: &[Conversation],
    json: bool,
) -> Result<i32> {
    let model_path = dn_model::resolve_model_for_training(&job.model)
        .with_context(|| format!("the job's base model {} is not available here", job.model))?;
    let mut artifacts = ModelArtifacts::load(&model_path)?;
    artifacts.template.set_now(job.created_at.fixed_offset());
    let prompts = conversations
        .iter()
        .map(|c| completion_prompt(&artifacts, c, system_prompt).map_err(anyhow::Error::from))
        .collect::<Result<Vec<_>>>()?;
    // The prefill holds every prompt token at once: nothing longer than the model reads.
    if let Some(context) = artifacts.context_length
        && let Some((i, p)) = prompts
            .iter()
            .enumerate()
            .find(|(_, p)| p.prompt_ids.len() as u64 > context)
    {
        bail!(
            "conversation {}: its prompt is {} tokens, longer than the model's context of {context}",
            i + 1,
            p.prompt_ids.len()
        );
    }
    let base = BaseModel::load(&model_path, DType::F32, &Device::Cpu)?;
    let model = match adapter {
        Some(dir) => LoraModel::with_adapter(&base, dir)?,
        // B = 0: the pairs add nothing.
        None => LoraModel::new(&base, &LoraConfig::new(1, 1.0), 0)?,
    };
    drop(base);
    let options = SamplingOptions {
        max_tokens: args.max_tokens,
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        seed: args.seed,
        stop: artifacts.stop_ids(),
    };
    let ids: Vec<Vec<u32>> = prompts.iter().map(|p| p.prompt_ids.clone()).collect();
    // One prompt streams: the text of everything generated so far is decoded again and its new end printed
    // (a token may complete a character only with the next).
    let stream = prompts.len() == 1 && !json;
    let (mut tokens, mut printed) = (Vec::new(), 0usize);
    let mut out = std::io::stdout().lock();
    let completions = generate(&model, &ids, &options, &mut |_, token| {
        if stream {
            tokens.push(token);
            if let Ok(text) = decode(&artifacts.tokenizer, &tokens)
                && text.len() > printed
                && text.is_char_boundary(printed)
            {
                let _ = out.write_all(&text.as_bytes()[printed..]);
                let _ = out.flush();
                printed = text.len();
            }
        }
        true
    })?;
    for (i, (p, c)) in prompts.iter().zip(&completions).enumerate() {
        let text = decode(&artifacts.tokenizer, &c.tokens)?;
        if json {
            let line = json!({"prompt": p.prompt, "reference": p.reference, "completion": text,
                              "num_tokens": c.tokens.len(), "finish_reason": c.finish.name()});
            writeln!(out, "{line}")?;
        } else if stream {
            writeln!(out)?;
        } else {
            writeln!(out, "[{}] {}", i + 1, p.prompt)?;
            if !p.reference.is_empty() {
                writeln!(out, "  reference: {}", p.reference)?;
            }
            writeln!(out, "  completion: {text}\n")?;
        }
    }
    Ok(0)
}
