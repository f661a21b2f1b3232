//! Chat conversations: the shape every dataset row and agent trajectory is normalized into, and the
//! capability system-prompt scaffolding applied to them. Pure: no I/O beyond what callers hand in.

mod message;
mod scaffold;

pub use message::{ChatMessage, Conversation, FunctionCall, Role, ToolCall};
pub use scaffold::apply_system_prompt;
