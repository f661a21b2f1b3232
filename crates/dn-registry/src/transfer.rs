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
        let copied = async {
            tokio::io::copy(&mut file, &mut writer).await?;
            writer.shutdown().await
        }
        .await;
        if let Err(e) = copied {
            // Abandon the multipart upload (if one started) rather than leave its parts behind.
            let _ = writer.abort().await;
            return Err(Error::Config(format!(
                "cannot upload {}: {e}",
                path.display()
            )));
        }
        Ok(())
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
