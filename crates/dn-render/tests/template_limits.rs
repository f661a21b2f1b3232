//! A chat template that runs away (nested loops) on real conversations stops the whole preparation with
//! one clear error within seconds, instead of spending its fuel once per row; one that runs away on any
//! conversation is refused when the model loads.

use std::time::{Duration, Instant};

use dn_data::{ChatMessage, Conversation, Role};
use dn_render::{ModelArtifacts, PrepareOptions, TrainOn, prepare};

fn model_with_template(template: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/families/llama/model");
    let dir = tempfile::tempdir().unwrap();
    for file in ["config.json", "tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(fixture.join(file), dir.path().join(file)).unwrap();
    }
    std::fs::write(dir.path().join("chat_template.jinja"), template).unwrap();
    let path = dir.path().to_path_buf();
    (dir, path)
}

const RUNAWAY: &str = "{% for a in range(10000) %}{% for b in range(10000) %}{% for c in range(10000) %}\
                       {% endfor %}{% endfor %}{% endfor %}";

#[test]
fn runaway_templates_stop_preparation_at_once() {
    // Only conversations longer than the probes' run away.
    let template = format!(
        "{{% if messages | length > 2 %}}{RUNAWAY}{{% endif %}}\
         {{% for m in messages %}}<{{{{ m.role }}}}>{{{{ m.content }}}}{{% endfor %}}\
         {{% if add_generation_prompt %}}<assistant>{{% endif %}}"
    );
    let (_dir, path) = model_with_template(&template);
    let artifacts = ModelArtifacts::load(&path).unwrap();
    let conversations: Vec<Conversation> = (0..200)
        .map(|i| Conversation {
            messages: vec![
                ChatMessage::new(Role::User, format!("question {i}")),
                ChatMessage::new(Role::Assistant, "answer"),
                ChatMessage::new(Role::User, "more"),
                ChatMessage::new(Role::Assistant, "done"),
            ],
            ..Conversation::default()
        })
        .collect();
    let options = PrepareOptions {
        max_sequence_length: 256,
        system_prompt: String::new(),
        train_on: TrainOn::Assistant,
    };
    let started = Instant::now();
    let prepared = prepare(&artifacts, conversations, &options);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    let limit = prepared.template_limit.expect("the limit is reported");
    assert!(limit.contains("DN_TEMPLATE_FUEL"), "{limit}");
    assert!(prepared.examples.is_empty());

    // Running away on every conversation: refused at load.
    let (_dir, path) = model_with_template(RUNAWAY);
    let e = ModelArtifacts::load(&path).unwrap_err().to_string();
    assert!(e.contains("DN_TEMPLATE_FUEL"), "{e}");
}
