//! An upload: the files of one dataset or capability directory, with paths checked before any of them
//! reaches a storage key.

use bytes::Bytes;
use sha2::{Digest, Sha256};

use dn_types::FileEntry;

use crate::error::{Error, Result};

#[derive(Debug, Clone)]
pub struct UploadFile {
    pub path: String,
    pub bytes: Bytes,
}

/// The files of one push, sorted by path, with unique, safe relative paths.
#[derive(Debug, Clone, Default)]
pub struct Upload {
    files: Vec<UploadFile>,
}

impl Upload {
    /// Builds an upload; refuses unsafe or duplicate paths and uploads over `limit` bytes in total.
    pub fn new(mut files: Vec<UploadFile>, limit: u64) -> Result<Self> {
        let size: u64 = files.iter().map(|f| f.bytes.len() as u64).sum();
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
        std::str::from_utf8(&file.bytes).map_err(|_| Error::invalid(path, "is not valid UTF-8"))
    }

    /// File entries with digests, and the digest of the whole content.
    pub fn digest(&self) -> (Vec<FileEntry>, String) {
        let entries: Vec<FileEntry> = self
            .files
            .iter()
            .map(|f| FileEntry {
                path: f.path.clone(),
                size: f.bytes.len() as u64,
                sha256: sha256_id(&f.bytes),
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
            Upload::new(
                vec![UploadFile {
                    path: p.into(),
                    bytes: Bytes::from(b),
                }],
                1000,
            )
            .unwrap()
        };
        assert_eq!(up("a", "x").digest().1, up("a", "x").digest().1);
        assert_ne!(up("a", "x").digest().1, up("b", "x").digest().1);
        assert_ne!(up("a", "x").digest().1, up("a", "y").digest().1);
        let err = Upload::new(
            vec![UploadFile {
                path: "a".into(),
                bytes: Bytes::from(vec![0; 11]),
            }],
            10,
        );
        assert!(matches!(
            err,
            Err(Error::TooLarge {
                size: 11,
                limit: 10
            })
        ));
    }
}
