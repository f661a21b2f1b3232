//! Dataset rows and agent trajectories -> chat conversations, and the capability system-prompt scaffolding
//! applied to them. Pure: callers hand in bytes.

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
