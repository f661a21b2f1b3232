//! Dataset files -> rows (JSON objects) with their row numbers: JSONL (one object per line), JSON (an
//! array of objects, or one object), CSV (a header row; cells holding JSON arrays or objects are parsed),
//! Parquet (each record as a JSON object; lists and structs nested, nulls kept).
//! A bad row is an error for that row; the others are still read.

use std::path::Path;

use serde_json::{Map, Value};

use crate::error::Error;

/// Rows larger than this are refused (and skipped) rather than parsed; any format's row holding more text
/// than this is skipped too (8 MiB: far beyond the longest sequence a job trains on, which keeps
/// tokenization's memory per row bounded).
pub const MAX_ROW_BYTES: usize = 8 << 20;

/// The file formats rows are read from: dn-spec's `format` option (arrow is known, not readable yet).
pub use dn_spec::DataFormat as Format;

/// `format` if rows can be read from it, else an error naming `file`.
pub fn readable(format: Format, file: &str) -> Result<Format, Error> {
    match format.is_readable() {
        true => Ok(format),
        false => Err(unreadable(format, file)),
    }
}

fn unreadable(format: Format, file: &str) -> Error {
    Error::File {
        file: file.to_owned(),
        message: format!("format '{format}' cannot be read yet (jsonl, json, csv and parquet can)"),
    }
}

/// A readable format from a file name's extension.
pub fn format_of_path(path: &Path) -> Result<Format, Error> {
    let extension = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let file = path.display().to_string();
    let format = Format::parse(extension).map_err(|_| Error::File {
        file: file.clone(),
        message: format!(
            "extension '{extension}' names no dataset format (jsonl, json, csv or parquet)"
        ),
    })?;
    readable(format, &file)
}

/// A row with its 1-based number (line for JSONL, element for JSON, record for CSV).
pub type Row = (usize, Result<Value, Error>);

/// Reads every row of `bytes` (the content of `file`).
pub fn read_rows(bytes: &[u8], format: Format, file: &str) -> Result<Vec<Row>, Error> {
    rows(bytes, format, file)?.collect()
}

/// The rows of `bytes`, decoded as they are asked for: a caller that stops early (a preview of a few
/// rows) decodes no more of the file (JSON is the exception: the document is parsed whole). An `Err` item
/// is a file-level error and the last item.
pub fn rows<'a>(
    bytes: &'a [u8],
    format: Format,
    file: &'a str,
) -> Result<Box<dyn Iterator<Item = Result<Row, Error>> + 'a>, Error> {
    let file_error = |message: String| Error::File {
        file: file.to_owned(),
        message,
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(file_error("the file is empty".into()));
    }
    let row_error = move |row: usize, message: String| Error::Row {
        file: file.to_owned(),
        row,
        message,
    };
    match format {
        Format::Jsonl => Ok(Box::new(
            bytes
                .split(|b| *b == b'\n')
                .enumerate()
                .filter(|(_, line)| !line.iter().all(u8::is_ascii_whitespace))
                .map(move |(i, line)| {
                    let row = i + 1;
                    if line.len() > MAX_ROW_BYTES {
                        let message =
                            format!("row is {} bytes (limit {MAX_ROW_BYTES})", line.len());
                        return Ok((row, Err(row_error(row, message))));
                    }
                    let parsed = std::str::from_utf8(line)
                        .map_err(|e| row_error(row, format!("invalid UTF-8: {e}")))
                        .and_then(|text| {
                            serde_json::from_str(text)
                                .map_err(|e| row_error(row, format!("invalid JSON: {e}")))
                        });
                    Ok((row, parsed))
                }),
        )),
        Format::Json => {
            let text = std::str::from_utf8(bytes)
                .map_err(|e| file_error(format!("invalid UTF-8: {e}")))?;
            let value: Value =
                serde_json::from_str(text).map_err(|e| file_error(format!("invalid JSON: {e}")))?;
            let items = match value {
                Value::Array(items) => items,
                object @ Value::Object(_) => vec![object],
                other => {
                    return Err(file_error(format!(
                        "expected an array of rows, found {}",
                        crate::normalize::kind(&other)
                    )));
                }
            };
            Ok(Box::new(
                items
                    .into_iter()
                    .enumerate()
                    .map(|(i, v)| Ok((i + 1, Ok(v)))),
            ))
        }
        Format::Parquet => parquet_rows(bytes, file),
        Format::Arrow => Err(unreadable(format, file)),
        Format::Csv => {
            let mut reader = csv::ReaderBuilder::new().flexible(false).from_reader(bytes);
            let headers = reader
                .headers()
                .map_err(|e| file_error(format!("cannot read the CSV header: {e}")))?
                .clone();
            Ok(Box::new(reader.into_records().enumerate().map(
                move |(i, record)| {
                    let row = i + 1;
                    let record = match record {
                        Ok(record) => record,
                        Err(e) => {
                            return Ok((row, Err(row_error(row, format!("invalid CSV: {e}")))));
                        }
                    };
                    let object: Map<String, Value> = headers
                        .iter()
                        .zip(record.iter())
                        .map(|(key, cell)| (key.to_owned(), csv_cell(cell)))
                        .collect();
                    Ok((row, Ok(Value::Object(object))))
                },
            )))
        }
    }
}

/// A CSV cell: empty is absent (null), JSON arrays and objects (e.g. a `messages` column) are parsed,
/// everything else is text.
fn csv_cell(cell: &str) -> Value {
    if cell.is_empty() {
        return Value::Null;
    }
    let trimmed = cell.trim_start();
    if (trimmed.starts_with('[') || trimmed.starts_with('{'))
        && let Ok(parsed) = serde_json::from_str::<Value>(cell)
    {
        return parsed;
    }
    Value::String(cell.to_owned())
}

fn parquet_rows<'a>(
    bytes: &[u8],
    file: &'a str,
) -> Result<Box<dyn Iterator<Item = Result<Row, Error>> + 'a>, Error> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::record::reader::RowIter;
    let reader = SerializedFileReader::new(bytes::Bytes::copy_from_slice(bytes)).map_err(|e| {
        Error::File {
            file: file.to_owned(),
            message: format!("not a readable Parquet file: {e}"),
        }
    })?;
    // The footer says how many rows there are; a corrupt file's reader may go on yielding errors (or
    // rows) for ever, so no more than that are read, and a decoding error ends the file.
    let expected = usize::try_from(reader.metadata().file_metadata().num_rows()).unwrap_or(0);
    let reader: Box<dyn FileReader> = Box::new(reader);
    let mut failed = false;
    Ok(Box::new(
        RowIter::from_file_into(reader)
            .take(expected)
            .enumerate()
            .map_while(move |(i, row)| {
                if failed {
                    return None;
                }
                Some(match row {
                    Ok(row) => Ok((i + 1, Ok(row.to_json_value()))),
                    Err(e) => {
                        failed = true;
                        Err(Error::File {
                            file: file.to_owned(),
                            message: format!(
                                "cannot decode Parquet record {}: {e} (a corrupt file?)",
                                i + 1
                            ),
                        })
                    }
                })
            }),
    ))
}
