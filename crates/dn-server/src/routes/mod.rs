pub mod checkpoints;
pub mod console;
pub mod jobs;
pub mod meta;
pub mod preview;
pub mod registry;
pub mod stream;

use axum::body::Body;
use axum::http::header;
use axum::response::IntoResponse;
use dn_registry::ByteStream;

/// A stored file's bytes as the response body, streamed from storage, with its length.
pub(crate) fn file_response(size: u64, stream: ByteStream) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (header::CONTENT_LENGTH, size.to_string()),
        ],
        Body::from_stream(stream),
    )
}
