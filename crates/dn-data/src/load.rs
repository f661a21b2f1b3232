//! Files -> conversations, keeping row order and reporting each bad row (file and row number).

use crate::error::Error;
use crate::message::Conversation;
use crate::normalize::normalize_row;
use crate::reader::{Format, MAX_ROW_BYTES, rows};

/// What one file yielded.
#[derive(Debug, Default)]
pub struct Loaded {
    pub conversations: Vec<Conversation>,
    /// The row number of each conversation (as in row errors).
    pub rows: Vec<usize>,
    /// Rows that were skipped, in order.
    pub errors: Vec<Error>,
}

/// Reads and normalizes every row of one file; a file-level problem (empty, unreadable JSON array) is an
/// error, a bad row is recorded and skipped.
pub fn load_conversations(bytes: &[u8], format: Format, file: &str) -> Result<Loaded, Error> {
    load_first_conversations(bytes, format, file, usize::MAX)
}

/// [`load_conversations`] that stops once it has `limit` conversations: the rest of the file is not
/// decoded (a preview of three rows of a large file reads three rows, and the bad ones before them).
pub fn load_first_conversations(
    bytes: &[u8],
    format: Format,
    file: &str,
    limit: usize,
) -> Result<Loaded, Error> {
    let mut loaded = Loaded::default();
    let mut rows = rows(bytes, format, file)?;
    while loaded.conversations.len() < limit {
        let Some(next) = rows.next() else {
            break;
        };
        let (row, value) = next?;
        let result = value.and_then(|value| {
            let size = text_bytes(&value, MAX_ROW_BYTES + 1);
            if size > MAX_ROW_BYTES {
                return Err(Error::Row {
                    file: file.to_owned(),
                    row,
                    message: format!("holds more than {MAX_ROW_BYTES} bytes of text (the limit)"),
                });
            }
            normalize_row(&value).map_err(|message| Error::Row {
                file: file.to_owned(),
                row,
                message,
            })
        });
        match result {
            Ok(conversation) => {
                loaded.conversations.push(conversation);
                loaded.rows.push(row);
            }
            Err(error) => loaded.errors.push(error),
        }
    }
    Ok(loaded)
}

/// Bytes of the strings and keys in `value`, counting stopped once past `stop`.
fn text_bytes(value: &serde_json::Value, stop: usize) -> usize {
    use serde_json::Value;
    let mut total = 0;
    let mut pending = vec![value];
    while let Some(v) = pending.pop() {
        match v {
            Value::String(s) => total += s.len(),
            Value::Array(items) => pending.extend(items),
            Value::Object(map) => {
                for (k, item) in map {
                    total += k.len();
                    pending.push(item);
                }
            }
            _ => total += 8,
        }
        if total > stop {
            break;
        }
    }
    total
}
