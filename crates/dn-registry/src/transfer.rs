//! Streaming between local files and object storage: uploads go through a buffered writer that turns
//! into a multipart upload above `UPLOAD_BUFFER`, downloads are written chunk by chunk, so no whole file
//! is held in memory either way.

use std::path::Path;

use futures::TryStreamExt;
use object_store::buffered::BufWriter;
use object_store::path::Path as StorePath;
use tokio::io::AsyncWriteExt;

use crate::error::{Error, Result};
use crate::storage::Registry;

/// Bytes buffered per uploaded file before it becomes a multipart upload (S3 parts must be >= 5 MiB).
const UPLOAD_BUFFER: usize = 8 << 20;
/// Parts of one multipart upload in flight at once.
const UPLOAD_CONCURRENCY: usize = 4;

fn io_error(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::Config(format!("cannot {what} {}: {e}", path.display()))
}

impl Registry {
    /// Streams a local file into `key` (one put when small, a multipart upload when large).
    pub(crate) async fn upload_file(&self, path: &Path, key: StorePath) -> Result<()> {
        let mut file = tokio::fs::File::open(path)
            .await
            .map_err(|e| io_error("read", path, e))?;
        let mut writer = BufWriter::with_capacity(self.store.clone(), key, UPLOAD_BUFFER)
            .with_max_concurrency(UPLOAD_CONCURRENCY);
        let failed = |e: &dyn std::fmt::Display| {
            Error::Config(format!("cannot upload {}: {e}", path.display()))
        };
        if let Err(e) = tokio::io::copy(&mut file, &mut writer).await {
            // Abandon the multipart upload (if one started) rather than leave its parts behind.
            return Err(match writer.abort().await {
                Ok(()) => failed(&e),
                Err(abort) => failed(&format!("{e} (and abandoning its parts failed: {abort})")),
            });
        }
        // The writer is shut down whatever the outcome: a multipart upload whose completion failed was
        // aborted inside, and aborting a shut-down writer would panic.
        writer.shutdown().await.map_err(|e| failed(&e))
    }

    /// Streams object `key` into a local file.
    pub(crate) async fn download_file(&self, key: &StorePath, path: &Path) -> Result<()> {
        let mut stream = self.store.get(key).await?.into_stream();
        let mut file = tokio::fs::File::create(path)
            .await
            .map_err(|e| io_error("create", path, e))?;
        while let Some(chunk) = stream.try_next().await? {
            file.write_all(&chunk)
                .await
                .map_err(|e| io_error("write", path, e))?;
        }
        file.flush().await.map_err(|e| io_error("write", path, e))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::Ordering;

    use object_store::path::Path as StorePath;

    use crate::failing_store::FailingStore;
    use crate::storage::Registry;

    /// A put refused at shutdown (small file) and a multipart upload refused mid-copy (large file) both
    /// come back as errors naming the file and the store's cause, never a panic; once the store
    /// answers again the same upload goes through.
    #[tokio::test]
    async fn failed_uploads_report_their_cause_and_leave_the_writer_usable() {
        let store = Arc::new(FailingStore::default());
        let failing = store.failing.clone();
        let registry = Registry::with_store(store.clone());
        let dir = tempfile::tempdir().unwrap();
        for (name, size) in [("small.bin", 1000usize), ("large.bin", 20 << 20)] {
            let path = dir.path().join(name);
            std::fs::write(&path, vec![7u8; size]).unwrap();
            let key = StorePath::from(format!("up/{name}"));
            failing.store(true, Ordering::SeqCst);
            let e = registry.upload_file(&path, key.clone()).await.unwrap_err();
            let text = e.to_string();
            assert!(
                text.contains(name) && text.contains("No space left on device"),
                "{text}"
            );
            failing.store(false, Ordering::SeqCst);
            registry.upload_file(&path, key.clone()).await.unwrap();
            let stored = registry
                .store
                .get(&key)
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
            assert_eq!(stored.len(), size);
        }
    }
}
