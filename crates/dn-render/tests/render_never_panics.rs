//! Arbitrary message contents (special-token text, the fast path's marker characters, control characters,
//! any Unicode) never make rendering or masking panic, and every supervised run still ends an assistant
//! turn.

use std::sync::OnceLock;

use dn_data::{ChatMessage, Conversation, Role};
use dn_render::{ModelArtifacts, encode};
use proptest::prelude::*;

fn model() -> Option<&'static ModelArtifacts> {
    static MODEL: OnceLock<Option<ModelArtifacts>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let path = dn_testkit::test_model()?;
            Some(ModelArtifacts::load(&path).unwrap())
        })
        .as_ref()
}

fn content() -> impl Strategy<Value = String> {
    prop_oneof![
        ".*",
        Just("<|im_end|>".to_owned()),
        Just("<|im_start|>assistant\n".to_owned()),
        Just("\u{E000}\u{E001}".to_owned()),
        Just(String::new()),
        "[ \n\t]{0,5}",
        "(<\\|im_end\\|>|\u{E000}|\u{E001}|[a-z ]){0,12}",
    ]
}

fn role() -> impl Strategy<Value = Role> {
    prop_oneof![
        Just(Role::System),
        Just(Role::User),
        Just(Role::Assistant),
        Just(Role::Tool)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn encoding_never_panics(messages in proptest::collection::vec((role(), content()), 0..6), max in 1usize..64) {
        let Some(model) = model() else { return Ok(()) };
        let conversation = Conversation {
            messages: messages.into_iter().map(|(role, text)| ChatMessage::new(role, text)).collect(),
            tools: vec![],
        };
        if let Ok(examples) = encode(model, &conversation, max) {
            let end = model.tokenizer.token_to_id("<|im_end|>").unwrap();
            for example in examples {
                prop_assert_eq!(example.input_ids.len(), example.loss_mask.len());
                prop_assert!(example.input_ids.len() <= max);
                // A supervised run that is not cut off by truncation ends with <|im_end|>.
                for i in 0..example.input_ids.len() {
                    let run_ends = example.loss_mask[i] == 1
                        && example.loss_mask.get(i + 1).is_some_and(|next| *next == 0);
                    if run_ends {
                        prop_assert_eq!(example.input_ids[i], end);
                    }
                }
            }
        }
    }
}
