//! Dataset rows and agent trajectories -> chat conversations, and the capability system-prompt scaffolding
//! applied to them. Pure: callers hand in bytes.
//!
//! Readers for JSONL, JSON, CSV and Parquet number rows (files memory-mapped, rows decoded lazily except JSON
//! documents); the shape normalizers (messages, OpenAI tool calls, native agent records, ATIF trajectories,
//! prompt/completion aliases) give errors that name the field; `scaffold` applies the capability's system
//! prompt.

mod error;
mod load;
mod message;
mod normalize;
mod reader;
mod scaffold;
mod trajectory;

pub use error::{Error, Result};
pub use load::{Loaded, load_conversations, load_first_conversations};
pub use message::{ChatMessage, Conversation, FunctionCall, Role, ToolCall};
pub use normalize::{COMPLETION_KEYS, PROMPT_KEYS, normalize_row, row_conversation};
pub use reader::{Format, MAX_ROW_BYTES, Row, format_of_path, read_rows, readable, rows};
pub use scaffold::apply_system_prompt;
