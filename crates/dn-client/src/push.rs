//! Pushes: the files of a dataset or capability directory as one multipart request. Files on disk are
//! streamed from it, so a large dataset is never read into memory whole.

use std::path::PathBuf;

use bytes::Bytes;
use reqwest::multipart::{Form, Part};
use tokio::io::AsyncReadExt;

use crate::{Error, Result};

/// Read size of a streamed file.
const CHUNK: usize = 256 << 10;

/// One file of a push: its path relative to the dataset or capability root, and where its bytes are.
#[derive(Debug, Clone)]
pub struct PushFile {
    pub path: String,
    pub content: PushContent,
}

#[derive(Debug, Clone)]
pub enum PushContent {
    Bytes(Vec<u8>),
    /// A local file, streamed when the request is sent.
    File(PathBuf),
}

impl PushFile {
    pub fn bytes(path: impl Into<String>, bytes: impl Into<Vec<u8>>) -> Self {
        PushFile {
            path: path.into(),
            content: PushContent::Bytes(bytes.into()),
        }
    }

    pub fn file(path: impl Into<String>, local: impl Into<PathBuf>) -> Self {
        PushFile {
            path: path.into(),
            content: PushContent::File(local.into()),
        }
    }
}

/// The multipart body of a push: one part per file, named by its relative path.
pub(crate) async fn multipart(files: Vec<PushFile>) -> Result<Form> {
    let mut form = Form::new();
    for file in files {
        let part = match file.content {
            PushContent::Bytes(bytes) => Part::bytes(bytes),
            PushContent::File(local) => file_part(local).await?,
        };
        form = form.part("file", part.file_name(file.path));
    }
    Ok(form)
}

async fn file_part(local: PathBuf) -> Result<Part> {
    let read_error = |source| Error::Read {
        path: local.display().to_string(),
        source,
    };
    let file = tokio::fs::File::open(&local).await.map_err(read_error)?;
    let size = file.metadata().await.map_err(read_error)?.len();
    let chunks = futures::stream::try_unfold(file, |mut file| async move {
        let mut buffer = vec![0; CHUNK];
        let read = file.read(&mut buffer).await?;
        if read == 0 {
            return Ok::<_, std::io::Error>(None);
        }
        buffer.truncate(read);
        Ok(Some((Bytes::from(buffer), file)))
    });
    Ok(Part::stream_with_length(
        reqwest::Body::wrap_stream(chunks),
        size,
    ))
}
