//! Token-exact parity with transformers' `apply_chat_template` on SmolLM2-135M-Instruct (GGUF), and the
//! loss-mask and truncation rules. The expected ids come from scripts/reference/chat_parity.py.

use std::path::PathBuf;

use dn_data::{ChatMessage, Conversation, Role, apply_system_prompt};
use dn_render::{Example, ModelArtifacts, encode};
use serde::Deserialize;

#[derive(Deserialize)]
struct Fixture {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    messages: Vec<ChatMessage>,
    system_prompt: Option<String>,
    text: String,
    input_ids: Vec<u32>,
    loss_mask: Vec<u8>,
}

/// The GGUF fetched by scripts/fetch-test-model.sh; `None` (test skipped) when absent, unless the test
/// script requires it.
fn model() -> Option<ModelArtifacts> {
    let path = dn_testkit::test_model()?;
    Some(ModelArtifacts::load(&path).unwrap())
}

/// SmolLM2's template is prefix-stable: one example per conversation.
fn encode_one(model: &ModelArtifacts, conversation: &Conversation, max: usize) -> Example {
    let mut examples = encode(model, conversation, max).unwrap();
    assert_eq!(examples.len(), 1);
    examples.pop().unwrap()
}

fn fixture() -> Fixture {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/smollm2_chat_parity.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn conversation(case: &Case) -> Conversation {
    let mut conversation = Conversation {
        messages: case.messages.clone(),
        tools: vec![],
    };
    if let Some(prompt) = &case.system_prompt {
        apply_system_prompt(&mut conversation, prompt);
    }
    conversation
}

#[test]
fn token_ids_and_masks_match_transformers() {
    let Some(model) = model() else { return };
    let fixture = fixture();
    assert!(fixture.cases.len() >= 20);
    // The one-render fast path applies to this template.
    assert_eq!(
        model.template.generation_prompt(),
        Some("<|im_start|>assistant\n")
    );
    for case in &fixture.cases {
        let conversation = conversation(case);
        let text = model
            .template
            .render(&conversation.messages, &[], false)
            .unwrap();
        assert_eq!(text, case.text, "{}: rendered text", case.name);
        let example = encode_one(&model, &conversation, 1 << 20);
        assert_eq!(
            example.input_ids, case.input_ids,
            "{}: token ids",
            case.name
        );
        assert_eq!(
            example.loss_mask, case.loss_mask,
            "{}: loss mask",
            case.name
        );
        assert!(!example.truncated);
        // The one-render fast path and the prefix renders agree.
        let by_prefixes =
            dn_render::render_by_prefixes(&model, &conversation, text.clone()).unwrap();
        assert_eq!(
            dn_render::render_supervised(&model, &conversation).unwrap(),
            by_prefixes,
            "{}",
            case.name
        );
    }
    eprintln!(
        "{} conversations token-exact with transformers",
        fixture.cases.len()
    );
}

#[test]
fn supervised_spans_are_assistant_content_plus_end_of_turn() {
    let Some(model) = model() else { return };
    for case in &fixture().cases {
        let conversation = conversation(case);
        let example = encode_one(&model, &conversation, 1 << 20);
        // Contiguous runs of supervised tokens, decoded.
        let mut runs: Vec<Vec<u32>> = Vec::new();
        let mut previous = 0u8;
        for (id, mask) in example.input_ids.iter().zip(&example.loss_mask) {
            if *mask == 1 {
                if previous == 0 {
                    runs.push(Vec::new());
                }
                runs.last_mut().unwrap().push(*id);
            }
            previous = *mask;
        }
        let assistants: Vec<&ChatMessage> = conversation
            .messages
            .iter()
            .filter(|m| m.role == Role::Assistant)
            .collect();
        assert_eq!(
            runs.len(),
            assistants.len(),
            "{}: one supervised run per assistant turn",
            case.name
        );
        for (run, message) in runs.iter().zip(assistants) {
            let decoded = model.tokenizer.decode(run, false).unwrap();
            assert!(
                decoded.ends_with("<|im_end|>"),
                "{}: {decoded:?}",
                case.name
            );
            let content = decoded.trim_end_matches("<|im_end|>");
            // A token that straddles the header boundary (e.g. "\n" + leading spaces) stays unsupervised,
            // so the supervised text is the content minus at most that leading whitespace.
            assert!(
                message.content.ends_with(content),
                "{}: {content:?} vs {:?}",
                case.name,
                message.content
            );
            assert!(
                message.content[..message.content.len() - content.len()]
                    .trim()
                    .is_empty(),
                "{}",
                case.name
            );
        }
        // Header tokens never carry loss (unless the assistant itself wrote that text).
        if assistants_quote_header(&conversation) {
            continue;
        }
        let header = model.tokenizer.token_to_id("<|im_start|>").unwrap();
        for (id, mask) in example.input_ids.iter().zip(&example.loss_mask) {
            assert!(!(*id == header && *mask == 1), "{}", case.name);
        }
    }
}

fn assistants_quote_header(conversation: &Conversation) -> bool {
    conversation
        .messages
        .iter()
        .any(|m| m.role == Role::Assistant && m.content.contains("<|im_start|>"))
}

#[test]
fn truncation_keeps_the_end() {
    let Some(model) = model() else { return };
    let case = fixture()
        .cases
        .into_iter()
        .find(|c| c.name == "multi_turn")
        .unwrap();
    let full = encode_one(&model, &conversation(&case), 1 << 20);
    for limit in [1, 7, 30, full.input_ids.len() - 1] {
        let cut = encode_one(&model, &conversation(&case), limit);
        assert!(cut.truncated);
        assert_eq!(cut.input_ids.len(), limit);
        assert_eq!(
            cut.input_ids[..],
            full.input_ids[full.input_ids.len() - limit..]
        );
        assert_eq!(
            cut.loss_mask[..],
            full.loss_mask[full.loss_mask.len() - limit..]
        );
    }
    let exact = encode_one(&model, &conversation(&case), full.input_ids.len());
    assert!(!exact.truncated);
    assert_eq!(exact, full);
}

/// A template that drops the reasoning of earlier assistant turns (as Qwen3's does) is not prefix-stable:
/// each assistant turn becomes its own example, supervising only that turn.
#[test]
fn templates_that_drop_past_reasoning_split_per_turn() {
    let Some(mut model) = model() else { return };
    let source = "{% for m in messages %}<|im_start|>{{ m.role }}\n\
        {% if m.role == 'assistant' and not loop.last %}{{ m.content.split('</think>')[-1].lstrip('\\n') }}\
        {% else %}{{ m.content }}{% endif %}<|im_end|>\n{% endfor %}\
        {% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
    model.template = dn_render::ChatTemplate::new(source, "", "<|im_end|>").unwrap();
    let message = |role, content: &str| ChatMessage::new(role, content);
    let conversation = Conversation {
        messages: vec![
            message(Role::User, "2+2?"),
            message(Role::Assistant, "<think>add</think>\n4"),
            message(Role::User, "3+3?"),
            message(Role::Assistant, "<think>add again</think>\n6"),
        ],
        tools: vec![],
    };
    let examples = encode(&model, &conversation, 1 << 20).unwrap();
    assert_eq!(examples.len(), 2);
    let supervised = |e: &Example| {
        let ids: Vec<u32> = e
            .input_ids
            .iter()
            .zip(&e.loss_mask)
            .filter(|(_, m)| **m == 1)
            .map(|(i, _)| *i)
            .collect();
        model.tokenizer.decode(&ids, false).unwrap()
    };
    assert_eq!(supervised(&examples[0]), "<think>add</think>\n4<|im_end|>");
    assert_eq!(
        supervised(&examples[1]),
        "<think>add again</think>\n6<|im_end|>"
    );
    let second = model
        .tokenizer
        .decode(&examples[1].input_ids, false)
        .unwrap();
    assert!(
        second.contains("assistant\n4<|im_end|>"),
        "earlier reasoning dropped, unsupervised: {second:?}"
    );

    // A generation prompt that is not how assistant turns start cannot be masked: refused, not guessed.
    let broken = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}\
        {% if add_generation_prompt %}<|im_start|>bot\n{% endif %}";
    model.template = dn_render::ChatTemplate::new(broken, "", "<|im_end|>").unwrap();
    let err = encode(&model, &conversation, 1 << 20).unwrap_err();
    assert!(err.to_string().contains("not prefix-stable"), "{err}");
}
