//! Files -> conversations, keeping row order and reporting each bad row (file and row number).

use crate::error::Error;
use crate::message::Conversation;
use crate::normalize::normalize_row;
use crate::reader::{Format, read_rows};

/// What one file yielded.
#[derive(Debug, Default)]
pub struct Loaded {
    pub conversations: Vec<Conversation>,
    /// Rows that were skipped, in order.
    pub errors: Vec<Error>,
}

/// Reads and normalizes every row of one file; a file-level problem (empty, unreadable JSON array) is an
/// error, a bad row is recorded and skipped.
pub fn load_conversations(bytes: &[u8], format: Format, file: &str) -> Result<Loaded, Error> {
    let mut loaded = Loaded::default();
    for (row, value) in read_rows(bytes, format, file)? {
        let result = value.and_then(|value| {
            normalize_row(&value).map_err(|message| Error::Row {
                file: file.to_owned(),
                row,
                message,
            })
        });
        match result {
            Ok(conversation) => loaded.conversations.push(conversation),
            Err(error) => loaded.errors.push(error),
        }
    }
    Ok(loaded)
}
