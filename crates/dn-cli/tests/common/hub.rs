//! A minimal Hugging Face hub on 127.0.0.1 for `HF_ENDPOINT`: answers `/{org}/{name}/resolve/{revision}/{file}`
//! as huggingface.co does (etag, commit and range headers, `x-error-code` on errors; gated repos want an
//! `Authorization` header) and records every requested path.

use std::collections::{HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};

pub const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

#[derive(Default)]
pub struct Repos {
    files: HashMap<String, HashMap<String, Vec<u8>>>,
    gated: HashSet<String>,
}

impl Repos {
    /// Serves every file of `dir` as `repo`'s.
    pub fn dir(mut self, repo: &str, dir: &Path) -> Self {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            self = self.file(repo, &name, &std::fs::read(&path).unwrap());
        }
        self
    }

    pub fn file(mut self, repo: &str, name: &str, body: &[u8]) -> Self {
        self.files
            .entry(repo.to_owned())
            .or_default()
            .insert(name.to_owned(), body.to_vec());
        self
    }

    pub fn gated(mut self, repo: &str) -> Self {
        self.gated.insert(repo.to_owned());
        self
    }
}

pub struct FakeHub {
    pub url: String,
    requests: Arc<Mutex<Vec<String>>>,
}

impl FakeHub {
    pub fn start(repos: Repos) -> FakeHub {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let _ = answer(stream, &repos, &seen);
            }
        });
        FakeHub { url, requests }
    }

    /// Every path requested so far.
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

fn answer(mut stream: TcpStream, repos: &Repos, seen: &Mutex<Vec<String>>) -> std::io::Result<()> {
    stream.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    // `Range: bytes=START-[END]`.
    let mut range: (usize, Option<usize>) = (0, None);
    let mut authorized = false;
    for _ in 0..100 {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(spec) = lower.strip_prefix("range: bytes=") {
            let (start, end) = spec.trim().split_once('-').unwrap_or(("0", ""));
            range = (start.parse().unwrap_or(0), end.parse().ok());
        }
        authorized |= lower.starts_with("authorization: bearer ");
    }
    let path = request_line.split(' ').nth(1).unwrap_or("").to_owned();
    seen.lock().unwrap().push(path.clone());
    let (repo, file) = match path.trim_start_matches('/').split_once("/resolve/") {
        Some((repo, rest)) => (
            repo.to_owned(),
            rest.split_once('/').map_or("", |(_, f)| f).to_owned(),
        ),
        None => (String::new(), String::new()),
    };
    let error = |status: &str, code: &str| {
        format!("HTTP/1.1 {status}\r\nx-error-code: {code}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            .into_bytes()
    };
    let response = match repos.files.get(&repo) {
        None => error("401 Unauthorized", "RepoNotFound"),
        Some(_) if repos.gated.contains(&repo) && !authorized => {
            error("401 Unauthorized", "GatedRepo")
        }
        Some(files) => match files.get(&file) {
            None => error("404 Not Found", "EntryNotFound"),
            Some(body) => {
                let end = range.1.map_or(body.len(), |e| (e + 1).min(body.len()));
                let start = range.0.min(end);
                let part = &body[start..end];
                let mut hasher = DefaultHasher::new();
                (&file, body).hash(&mut hasher);
                let mut head = format!(
                    "HTTP/1.1 206 Partial Content\r\netag: \"{:016x}\"\r\nx-repo-commit: {COMMIT}\r\n\
                     content-range: bytes {start}-{}/{}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    hasher.finish(),
                    end.saturating_sub(1),
                    body.len(),
                    part.len()
                )
                .into_bytes();
                head.extend_from_slice(part);
                head
            }
        },
    };
    stream.write_all(&response)
}
