//! Data preparation in a child process of the worker's own binary, under a memory limit (`RLIMIT_DATA`:
//! heap and private writable mappings). Decoding a corrupt Parquet file or rendering a chat template that
//! doubles a string can allocate without bound; here that ends the child, not the worker, and the job
//! fails naming the file or the rows being prepared when it died. A cancelled job kills the child.
//!
//! The parent writes the [`PrepareRequest`] as JSON; the child (`dn prepare-data --hidden`, which calls
//! [`run_child`]) reports on its stdout, one line each, the file it reads and the conversations it starts
//! and ends rendering, and writes its result to a file: `DNPREP1\n`, the header's length (u64 LE), the
//! header (JSON), then each group's examples (count u64; per example: length u32, truncated u8, ids u32
//! each, mask u8 each; all little-endian).

use std::collections::BTreeMap;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use dn_render::Example;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt};

use crate::dataprep::{
    DataFile, Observer, PrepareFailure, PrepareRequest, PreparedGroup, load_model, prepare_groups,
};
use crate::runner::RunError;

const MAGIC: &[u8; 8] = b"DNPREP1\n";
/// The child's stderr kept for the error message.
const STDERR_TAIL: usize = 4096;

/// How a worker runs data preparation in a child process.
#[derive(Debug, Clone)]
pub struct Sandbox {
    /// The `dn` executable (it has the hidden `prepare-data` command).
    pub exe: PathBuf,
    /// The child's `RLIMIT_DATA`, in bytes.
    pub memory_limit: u64,
}

/// The default limit: half of this node's memory (at least 1 GiB).
pub fn default_memory_limit() -> u64 {
    let total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib * 1024)
        })
        .unwrap_or(8 << 30);
    (total / 2).max(1 << 30)
}

/// How a process ended, in words.
pub fn describe_exit(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(9)) => {
            "was killed by signal 9 (SIGKILL: what the kernel's out-of-memory killer sends)".into()
        }
        (None, Some(6)) => {
            "aborted (signal 6, SIGABRT: a memory allocation that failed, or an abort)".into()
        }
        (None, Some(11)) => "crashed (signal 11, SIGSEGV)".into(),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        (None, None) => "ended".into(),
    }
}

#[derive(Serialize, Deserialize)]
struct Header {
    result: Result<Vec<PreparedGroup>, PrepareFailure>,
}

/// What the child is doing, from its stdout.
#[derive(Default)]
struct Whereabouts {
    loading_model: bool,
    reading: Option<String>,
    /// Conversation index -> (file, row).
    rendering: BTreeMap<usize, (String, usize)>,
}

impl Whereabouts {
    fn update(&mut self, line: &str) {
        let mut fields = line.splitn(4, '\t');
        match (fields.next(), fields.next(), fields.next(), fields.next()) {
            (Some("model"), None, None, None) => self.loading_model = true,
            (Some("read"), Some(file), None, None) => {
                self.loading_model = false;
                self.reading = Some(file.to_owned());
                self.rendering.clear();
            }
            (Some("start"), Some(index), Some(row), Some(file)) => {
                if let (Ok(index), Ok(row)) = (index.parse(), row.parse()) {
                    self.reading = None;
                    self.rendering.insert(index, (file.to_owned(), row));
                }
            }
            (Some("end"), Some(index), None, None) => {
                if let Ok(index) = index.parse::<usize>() {
                    self.rendering.remove(&index);
                }
            }
            _ => {}
        }
    }

    /// The job's error when the child ran out of memory.
    fn memory_error(&self, limit: u64) -> String {
        let limit = format!(
            "the data-preparation memory limit of {} MiB (worker setting prepare_memory_mb, \
             DN_PREPARE_MEMORY_MB)",
            limit >> 20
        );
        let rows: Vec<String> = self
            .rendering
            .values()
            .map(|(file, row)| format!("{file}: row {row}"))
            .collect();
        match (&self.reading, rows.as_slice()) {
            (_, [one]) => format!(
                "{one}: rendering it with the chat template ran past {limit}: the template builds \
                 very large strings from it, or the row is too large"
            ),
            (_, [_, ..]) => format!(
                "rendering one of these rows with the chat template ran past {limit}: {}; the \
                 template builds very large strings, or a row is too large",
                rows.join(", ")
            ),
            (Some(file), []) => format!(
                "{file}: decoding the file ran past {limit}: the file is corrupt or too large"
            ),
            (None, []) if self.loading_model => format!(
                "loading the model's chat template (rendering its probe conversations) ran past \
                 {limit}: the template builds very large strings"
            ),
            (None, []) => format!("preparing the job's data ran past {limit}"),
        }
    }
}

/// Runs [`prepare_groups`] in a child process; `scratch` is an existing directory for the request and
/// the result, which the caller removes.
pub async fn prepare_in_child(
    sandbox: &Sandbox,
    request: &PrepareRequest,
    scratch: &Path,
) -> Result<Vec<PreparedGroup>, RunError> {
    let (request_path, output_path) = (scratch.join("request.json"), scratch.join("result"));
    let body = serde_json::to_vec(request).map_err(|e| RunError::failed(e.to_string()))?;
    std::fs::write(&request_path, body).map_err(|e| {
        RunError::transient(format!("cannot write {}: {e}", request_path.display()))
    })?;
    let mut child = tokio::process::Command::new(&sandbox.exe)
        .arg("prepare-data")
        .arg(&request_path)
        .arg(&output_path)
        .arg(sandbox.memory_limit.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            RunError::io(
                format!("cannot start data preparation ({})", sandbox.exe.display()),
                &e,
            )
        })?;
    let whereabouts = Arc::new(Mutex::new(Whereabouts::default()));
    let stdout = child.stdout.take().expect("piped");
    let tracker = whereabouts.clone();
    let follow = tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            tracker.lock().expect("not poisoned").update(&line);
        }
    });
    let mut stderr = child.stderr.take().expect("piped");
    let tail = tokio::spawn(async move {
        let mut tail = Vec::new();
        let mut buffer = [0u8; 4096];
        while let Ok(n @ 1..) = stderr.read(&mut buffer).await {
            tail.extend_from_slice(&buffer[..n]);
            let excess = tail.len().saturating_sub(STDERR_TAIL);
            tail.drain(..excess);
        }
        String::from_utf8_lossy(&tail).trim().to_owned()
    });
    let status = child
        .wait()
        .await
        .map_err(|e| RunError::failed(format!("data preparation: {e}")))?;
    let _ = follow.await;
    let stderr = tail.await.unwrap_or_default();
    if !status.success() {
        let whereabouts = whereabouts.lock().expect("not poisoned");
        if stderr.contains("memory allocation of") {
            return Err(RunError::failed(
                whereabouts.memory_error(sandbox.memory_limit),
            ));
        }
        return Err(RunError::failed(format!(
            "data preparation {}: {}",
            describe_exit(status),
            if stderr.is_empty() {
                "no message"
            } else {
                &stderr
            }
        )));
    }
    let max_length = request.max_sequence_length;
    tokio::task::spawn_blocking(move || read_result(&output_path, max_length))
        .await
        .map_err(|e| RunError::failed(format!("data preparation: {e}")))?
        .map_err(|e| RunError::failed(format!("data preparation: reading its result: {e}")))?
        .map_err(RunError::from)
}

/// Reports to the parent over stdout, one line per event.
struct LineObserver;

/// A label on one line, without the separator.
fn one_line(text: &str) -> String {
    text.replace(['\t', '\n', '\r'], " ")
}

impl Observer for LineObserver {
    fn loading_model(&self) {
        let _ = writeln!(std::io::stdout().lock(), "model");
    }

    fn reading(&self, file: &DataFile) {
        let _ = writeln!(std::io::stdout().lock(), "read\t{}", one_line(&file.label));
    }

    fn rendering(&self, index: usize, file: &str, row: usize, started: bool) {
        let mut out = std::io::stdout().lock();
        let _ = if started {
            writeln!(out, "start\t{index}\t{row}\t{}", one_line(file))
        } else {
            writeln!(out, "end\t{index}")
        };
    }
}

/// Limits this process's data segment (heap and private writable mappings) to `bytes`.
fn limit_memory(bytes: u64) -> std::io::Result<()> {
    let limit = libc::rlimit {
        rlim_cur: bytes as libc::rlim_t,
        rlim_max: bytes as libc::rlim_t,
    };
    // SAFETY: setrlimit reads the struct it is given and nothing else.
    if unsafe { libc::setrlimit(libc::RLIMIT_DATA, &limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The child's side: `dn prepare-data REQUEST RESULT LIMIT` calls this. Exits non-zero only when it
/// cannot report (an unreadable request, an unwritable result); a bad input is reported in the result.
pub fn run_child(request_path: &Path, output_path: &Path, memory_limit: u64) -> Result<(), String> {
    limit_memory(memory_limit).map_err(|e| format!("cannot limit memory: {e}"))?;
    let text = std::fs::read(request_path)
        .map_err(|e| format!("cannot read {}: {e}", request_path.display()))?;
    let request: PrepareRequest =
        serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", request_path.display()))?;
    LineObserver.loading_model();
    let result = load_model(&request)
        .and_then(|model| prepare_groups(&request, &model, &AtomicBool::new(false), &LineObserver));
    write_result(output_path, result).map_err(|e| format!("{}: {e}", output_path.display()))
}

fn write_result(
    path: &Path,
    result: Result<Vec<PreparedGroup>, PrepareFailure>,
) -> std::io::Result<()> {
    let partial = path.with_extension("partial");
    let mut out = BufWriter::new(std::fs::File::create(&partial)?);
    let mut header = Header { result };
    let groups_examples: Vec<Vec<Example>> = match &mut header.result {
        Ok(groups) => groups
            .iter_mut()
            .map(|g| std::mem::take(&mut g.examples))
            .collect(),
        Err(_) => Vec::new(),
    };
    let header = serde_json::to_vec(&header)?;
    out.write_all(MAGIC)?;
    out.write_all(&(header.len() as u64).to_le_bytes())?;
    out.write_all(&header)?;
    for examples in &groups_examples {
        out.write_all(&(examples.len() as u64).to_le_bytes())?;
        for example in examples {
            out.write_all(&(example.input_ids.len() as u32).to_le_bytes())?;
            out.write_all(&[u8::from(example.truncated)])?;
            for id in &example.input_ids {
                out.write_all(&id.to_le_bytes())?;
            }
            out.write_all(&example.loss_mask)?;
        }
    }
    out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    std::fs::rename(partial, path)
}

fn read_exact<const N: usize>(input: &mut impl Read) -> std::io::Result<[u8; N]> {
    let mut bytes = [0u8; N];
    input.read_exact(&mut bytes)?;
    Ok(bytes)
}

fn invalid(message: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, message.to_owned())
}

/// The child's result; lengths are checked against `max_length` before anything is allocated.
fn read_result(
    path: &Path,
    max_length: usize,
) -> std::io::Result<Result<Vec<PreparedGroup>, PrepareFailure>> {
    let mut input = BufReader::new(std::fs::File::open(path)?);
    if &read_exact::<8>(&mut input)? != MAGIC {
        return Err(invalid("not a result file"));
    }
    let header_len = u64::from_le_bytes(read_exact(&mut input)?);
    if header_len > 1 << 30 {
        return Err(invalid("header too large"));
    }
    let mut header = vec![0u8; header_len as usize];
    input.read_exact(&mut header)?;
    let header: Header = serde_json::from_slice(&header)?;
    let mut groups = match header.result {
        Ok(groups) => groups,
        Err(message) => return Ok(Err(message)),
    };
    for group in &mut groups {
        let count = u64::from_le_bytes(read_exact(&mut input)?);
        if count != group.stats.examples as u64 {
            return Err(invalid("example count differs from the header"));
        }
        for _ in 0..count {
            let length = u32::from_le_bytes(read_exact(&mut input)?) as usize;
            if length > max_length {
                return Err(invalid("example longer than max_sequence_length"));
            }
            let truncated = read_exact::<1>(&mut input)?[0] != 0;
            let mut ids = vec![0u8; length * 4];
            input.read_exact(&mut ids)?;
            let mut loss_mask = vec![0u8; length];
            input.read_exact(&mut loss_mask)?;
            group.examples.push(Example {
                input_ids: ids
                    .chunks_exact(4)
                    .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect(),
                loss_mask,
                truncated,
            });
        }
    }
    Ok(Ok(groups))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(examples: Vec<Example>) -> PreparedGroup {
        let mut group = PreparedGroup {
            examples,
            rows_read: 3,
            errors: vec!["conversation 2: no".into()],
            ..PreparedGroup::default()
        };
        group.stats.examples = group.examples.len();
        group
    }

    #[test]
    fn results_round_trip_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("result");
        let example = |n: u32| Example {
            input_ids: (0..n).map(|i| i * 70_000).collect(),
            loss_mask: (0..n).map(|i| (i % 2) as u8).collect(),
            truncated: n == 3,
        };
        let groups = vec![group(vec![example(3), example(5)]), group(vec![])];
        write_result(&path, Ok(groups)).unwrap();
        let read = read_result(&path, 8).unwrap().unwrap();
        assert_eq!(read.len(), 2);
        assert_eq!(read[0].examples, vec![example(3), example(5)]);
        assert_eq!(read[0].errors, vec!["conversation 2: no".to_owned()]);
        assert_eq!(read[1].rows_read, 3);
        assert!(read_result(&path, 4).is_err(), "lengths are bounded");
        // A failure keeps whose fault it is across the file.
        let failure = PrepareFailure {
            message: "train.jsonl: cannot read the downloaded copy".into(),
            fault: crate::runner::Fault::Node,
        };
        write_result(&path, Err(failure.clone())).unwrap();
        assert_eq!(read_result(&path, 8).unwrap().unwrap_err(), failure);
    }

    #[test]
    fn the_error_names_what_was_being_prepared() {
        let mut w = Whereabouts::default();
        w.update("read\tdemo@1.0.0/train.parquet");
        assert!(w.memory_error(1 << 30).starts_with(
            "demo@1.0.0/train.parquet: decoding the file ran past the data-preparation memory limit \
             of 1024 MiB"
        ));
        w.update("start\t0\t1\tdemo@1.0.0/a.jsonl");
        w.update("start\t1\t3\tdemo@1.0.0/a.jsonl");
        w.update("end\t0");
        let message = w.memory_error(1 << 30);
        assert!(
            message.starts_with("demo@1.0.0/a.jsonl: row 3: rendering it"),
            "{message}"
        );
    }
}
