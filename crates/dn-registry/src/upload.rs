//! An upload: the files of one dataset or capability directory, with paths checked before any of them
//! reaches a storage key.

use std::path::PathBuf;

use bytes::Bytes;
use sha2::{Digest, Sha256};

use dn_types::FileEntry;

use crate::error::{Error, Result};

#[derive(Debug, Clone)]
pub struct UploadFile {
    pub path: String,
    pub content: FileContent,
}

/// Where an uploaded file's bytes are: in memory, or spooled to a local file by the receiver (large data
/// files), which streams it on to storage.
#[derive(Debug, Clone)]
pub enum FileContent {
    Memory(Bytes),
    Spooled {
        file: PathBuf,
        size: u64,
        /// `sha256:<hex>`, computed while spooling.
        sha256: String,
    },
}

impl UploadFile {
    pub fn in_memory(path: impl Into<String>, bytes: impl Into<Bytes>) -> Self {
        UploadFile {
            path: path.into(),
            content: FileContent::Memory(bytes.into()),
        }
    }

    pub fn size(&self) -> u64 {
        match &self.content {
            FileContent::Memory(bytes) => bytes.len() as u64,
            FileContent::Spooled { size, .. } => *size,
        }
    }

    fn sha256(&self) -> String {
        match &self.content {
            FileContent::Memory(bytes) => sha256_id(bytes),
            FileContent::Spooled { sha256, .. } => sha256.clone(),
        }
    }
}

/// The files of one push, sorted by path, with unique, safe relative paths.
#[derive(Debug, Clone, Default)]
pub struct Upload {
    files: Vec<UploadFile>,
}

impl Upload {
    /// Builds an upload; refuses unsafe or duplicate paths and uploads over `limit` bytes in total.
    pub fn new(mut files: Vec<UploadFile>, limit: u64) -> Result<Self> {
        let size: u64 = files.iter().map(UploadFile::size).sum();
        if size > limit {
            return Err(Error::TooLarge { size, limit });
        }
        for file in &files {
            validate_relative_path(&file.path)?;
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        if let Some(pair) = files.windows(2).find(|w| w[0].path == w[1].path) {
            return Err(Error::invalid(&pair[0].path, "uploaded twice"));
        }
        if files.is_empty() {
            return Err(Error::invalid("upload", "no files were uploaded"));
        }
        Ok(Upload { files })
    }

    pub fn files(&self) -> &[UploadFile] {
        &self.files
    }

    pub fn get(&self, path: &str) -> Option<&UploadFile> {
        self.files
            .binary_search_by(|f| f.path.as_str().cmp(path))
            .ok()
            .map(|i| &self.files[i])
    }

    pub fn text(&self, path: &str) -> Result<&str> {
        let file = self
            .get(path)
            .ok_or_else(|| Error::invalid(path, "missing from the upload"))?;
        match &file.content {
            FileContent::Memory(bytes) => {
                std::str::from_utf8(bytes).map_err(|_| Error::invalid(path, "is not valid UTF-8"))
            }
            FileContent::Spooled { size, .. } => Err(Error::invalid(
                path,
                format!("is {size} bytes: too large for a metadata file"),
            )),
        }
    }

    /// File entries with digests, and the digest of the whole content.
    pub fn digest(&self) -> (Vec<FileEntry>, String) {
        let entries: Vec<FileEntry> = self
            .files
            .iter()
            .map(|f| FileEntry {
                path: f.path.clone(),
                size: f.size(),
                sha256: f.sha256(),
            })
            .collect();
        let mut whole = Sha256::new();
        for entry in &entries {
            whole.update(entry.path.as_bytes());
            whole.update([0]);
            whole.update(entry.sha256.as_bytes());
            whole.update([b'\n']);
        }
        let digest = format!("sha256:{}", hex::encode(whole.finalize()));
        (entries, digest)
    }
}

/// Uploaded files larger than this are spooled to disk by [`FileReceiver`] instead of held in memory.
pub const SPOOL_ABOVE: usize = 8 << 20;

/// Receives one uploaded file chunk by chunk: in memory up to [`SPOOL_ABOVE`] bytes, beyond that in a
/// file under the receiver's spool directory (which the caller keeps until the push is done), hashing
/// as it goes.
pub struct FileReceiver {
    path: String,
    spool: PathBuf,
    buffer: Vec<u8>,
    file: Option<tokio::io::BufWriter<tokio::fs::File>>,
    hasher: Sha256,
    size: u64,
}

impl FileReceiver {
    /// `path` is the file's relative path in the upload; `index` makes its spool file name unique.
    pub fn new(path: String, spool_dir: &std::path::Path, index: usize) -> Self {
        FileReceiver {
            path,
            spool: spool_dir.join(format!("part-{index}")),
            buffer: Vec::new(),
            file: None,
            hasher: Sha256::new(),
            size: 0,
        }
    }

    fn spool_error(&self, e: std::io::Error) -> Error {
        Error::Config(format!(
            "cannot spool upload '{}' to {}: {e}",
            self.path,
            self.spool.display()
        ))
    }

    pub async fn push(&mut self, chunk: &[u8]) -> Result<()> {
        use tokio::io::AsyncWriteExt;
        self.hasher.update(chunk);
        self.size += chunk.len() as u64;
        if self.file.is_none() {
            if self.buffer.len() + chunk.len() <= SPOOL_ABOVE {
                self.buffer.extend_from_slice(chunk);
                return Ok(());
            }
            // Too large for memory from here on: what was buffered goes first into the spool file.
            let created = tokio::fs::File::create(&self.spool).await;
            let mut file = tokio::io::BufWriter::new(created.map_err(|e| self.spool_error(e))?);
            let buffered = std::mem::take(&mut self.buffer);
            let written = file.write_all(&buffered).await;
            written.map_err(|e| self.spool_error(e))?;
            self.file = Some(file);
        }
        let file = self.file.as_mut().expect("spooling");
        let written = file.write_all(chunk).await;
        written.map_err(|e| self.spool_error(e))
    }

    pub async fn finish(mut self) -> Result<UploadFile> {
        use tokio::io::AsyncWriteExt;
        let Some(mut file) = self.file.take() else {
            return Ok(UploadFile::in_memory(self.path, self.buffer));
        };
        file.flush().await.map_err(|e| self.spool_error(e))?;
        let sha256 = format!("sha256:{}", hex::encode(self.hasher.finalize()));
        Ok(UploadFile {
            path: self.path,
            content: FileContent::Spooled {
                file: self.spool,
                size: self.size,
                sha256,
            },
        })
    }
}

/// `sha256:<hex>` of some bytes.
pub fn sha256_id(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// A relative `/`-separated path with no empty, `.` or `..` component, no leading `/`, backslash, NUL or
/// control character, and no hidden (dot) component.
pub fn validate_relative_path(path: &str) -> Result<()> {
    let bad = |why: &str| Err(Error::invalid(path, format!("unsafe file path: {why}")));
    if path.is_empty() || path.len() > 512 {
        return bad("must be 1 to 512 characters");
    }
    if path.starts_with('/') || path.contains(':') {
        return bad("must be relative");
    }
    if path.chars().any(|c| c == '\\' || c.is_control()) {
        return bad("must not contain backslashes or control characters");
    }
    for part in path.split('/') {
        if part.is_empty() || part == "." || part == ".." {
            return bad("empty, '.' or '..' components are not allowed");
        }
        if part.starts_with('.') {
            return bad("hidden files are not allowed");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_unsafe_paths() {
        for bad in [
            "../x",
            "/etc/passwd",
            "a/../b",
            "a//b",
            "a\0b",
            "C:/x",
            "a\\b",
            ".git/config",
            "",
        ] {
            assert!(validate_relative_path(bad).is_err(), "{bad:?}");
        }
        validate_relative_path("data/train.jsonl").unwrap();
    }

    #[test]
    fn digest_depends_on_paths_and_bytes() {
        let up = |p: &str, b: &'static str| {
            Upload::new(vec![UploadFile::in_memory(p, b)], 1000).unwrap()
        };
        assert_eq!(up("a", "x").digest().1, up("a", "x").digest().1);
        assert_ne!(up("a", "x").digest().1, up("b", "x").digest().1);
        assert_ne!(up("a", "x").digest().1, up("a", "y").digest().1);
        let err = Upload::new(vec![UploadFile::in_memory("a", vec![0; 11])], 10);
        assert!(matches!(
            err,
            Err(Error::TooLarge {
                size: 11,
                limit: 10
            })
        ));
    }
}
