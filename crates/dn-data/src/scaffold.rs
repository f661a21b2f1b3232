//! The capability's system prompt, applied as the reference does.

use crate::message::{ChatMessage, Conversation, Role};

/// If the first message is `system`, its content becomes `prompt + "\n\n" + existing`; otherwise a system
/// message with the prompt is prepended. An empty prompt changes nothing.
pub fn apply_system_prompt(conversation: &mut Conversation, prompt: &str) {
    if prompt.is_empty() {
        return;
    }
    match conversation.messages.first_mut() {
        Some(first) if first.role == Role::System => {
            first.content = format!("{prompt}\n\n{}", first.content);
        }
        _ => conversation
            .messages
            .insert(0, ChatMessage::new(Role::System, prompt)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conversation(messages: Vec<ChatMessage>) -> Conversation {
        Conversation {
            messages,
            tools: vec![],
        }
    }

    #[test]
    fn prepends_or_merges() {
        let mut c = conversation(vec![ChatMessage::new(Role::User, "hi")]);
        apply_system_prompt(&mut c, "Be kind.");
        assert_eq!(c.messages[0], ChatMessage::new(Role::System, "Be kind."));
        let mut c = conversation(vec![
            ChatMessage::new(Role::System, "Existing."),
            ChatMessage::new(Role::User, "hi"),
        ]);
        apply_system_prompt(&mut c, "Be kind.");
        assert_eq!(c.messages[0].content, "Be kind.\n\nExisting.");
        assert_eq!(c.messages.len(), 2);
        let mut c = conversation(vec![ChatMessage::new(Role::User, "hi")]);
        apply_system_prompt(&mut c, "");
        assert_eq!(c.messages.len(), 1);
    }
}
