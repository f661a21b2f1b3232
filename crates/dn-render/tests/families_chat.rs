//! Token and loss-mask parity with transformers on each family's chat template (templates written for
//! dn's tests after the real ones' quirks: Llama 3.1's dated system header and trimmed contents, Mistral's
//! system-in-the-last-user-turn and missing generation prompt, Qwen2.5's default system prompt, Qwen3's
//! think blocks, Gemma 2's refused system role and Gemma 3's folded one, Phi-3's closing eos, gpt-oss's
//! harmony: dated system block, developer instructions, `<|return|>` on the last turn only, reasoning in
//! the analysis channel of the last turn, tool calls to the commentary channel), single and
//! multi-turn, with a capability system prompt; fixtures from scripts/reference/family_chat.py. Also: the
//! older layout (template inside tokenizer_config.json) renders the same, and `train_on` and per-message
//! weights select what the fixtures' masks supervise.

use std::path::PathBuf;

use chrono::DateTime;
use dn_data::{Conversation, apply_system_prompt, normalize_row};
use dn_render::{ModelArtifacts, SystemFit, TrainOn, encode_conversation};
use serde_json::{Value, json};

const FAMILIES: [&str; 11] = [
    "llama",
    "mistral",
    "qwen2",
    "qwen3",
    "gemma2",
    "gemma3",
    "phi3",
    "qwen3_moe",
    "qwen2_moe",
    "gpt_oss",
    "mixtral",
];

fn family_dir(family: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/families")
        .join(family)
}

fn fixture(family: &str) -> Value {
    let text = std::fs::read_to_string(family_dir(family).join("chat_parity.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn artifacts(dir: &std::path::Path, fixture: &Value) -> ModelArtifacts {
    let mut artifacts = ModelArtifacts::load(dir).unwrap();
    let date = format!("{}T10:00:00+00:00", fixture["date"].as_str().unwrap());
    artifacts
        .template
        .set_now(DateTime::parse_from_rfc3339(&date).unwrap());
    artifacts
}

fn conversation(case: &Value) -> Conversation {
    let mut conversation = normalize_row(&json!({"messages": case["messages"]})).unwrap();
    if let Some(prompt) = case["system_prompt"].as_str() {
        apply_system_prompt(&mut conversation, prompt);
    }
    conversation
}

fn fit_name(fit: SystemFit) -> &'static str {
    match fit {
        SystemFit::AsIs => "as_is",
        SystemFit::Merged => "merged",
        SystemFit::Dropped => "dropped",
    }
}

/// Every case of `family` through dn, against the fixture; returns the number of examples compared.
fn check(family: &str, artifacts: &ModelArtifacts, fixture: &Value) -> usize {
    assert_eq!(
        artifacts.template.generation_prompt(),
        fixture["generation_prompt"].as_str(),
        "{family}: generation prompt"
    );
    let eot: Vec<String> = serde_json::from_value(fixture["end_of_turn"].clone()).unwrap();
    assert_eq!(artifacts.end_of_turn, eot, "{family}: end-of-turn tokens");
    let mut compared = 0;
    for case in fixture["cases"].as_array().unwrap() {
        let name = format!("{family}/{}", case["name"].as_str().unwrap());
        let result =
            encode_conversation(artifacts, &conversation(case), 1 << 20, TrainOn::Assistant);
        if let Some(error) = case["error"].as_str() {
            let e = result.expect_err(&name).to_string();
            let first_words: String = error.chars().take(30).collect();
            assert!(
                e.contains(&first_words),
                "{name}: {e} vs transformers' {error}"
            );
            continue;
        }
        let (examples, fit) = result.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            fit_name(fit),
            case["system_fit"].as_str().unwrap(),
            "{name}: system message"
        );
        let want = case["examples"].as_array().unwrap();
        assert_eq!(examples.len(), want.len(), "{name}: number of examples");
        for (got, want) in examples.iter().zip(want) {
            let ids: Vec<u32> = serde_json::from_value(want["input_ids"].clone()).unwrap();
            let mask: Vec<u8> = serde_json::from_value(want["loss_mask"].clone()).unwrap();
            assert_eq!(got.input_ids, ids, "{name}: token ids");
            assert_eq!(got.loss_mask, mask, "{name}: loss mask");
            assert!(got.num_supervised() > 0, "{name}: nothing supervised");
            compared += 1;
        }
    }
    compared
}

#[test]
fn token_ids_and_masks_match_transformers_for_every_family() {
    for family in FAMILIES {
        let fixture = fixture(family);
        let artifacts = artifacts(&family_dir(family).join("model"), &fixture);
        let n = check(family, &artifacts, &fixture);
        eprintln!(
            "{family}: {n} examples token- and mask-exact (system role: {})",
            fixture["system_role"]
        );
    }
}

/// The same model directory in the older layout (the template inside tokenizer_config.json, no
/// chat_template.jinja) renders and masks the same.
#[test]
fn the_older_tokenizer_layout_renders_the_same() {
    for family in FAMILIES {
        let dir = tempfile::tempdir().unwrap();
        for name in ["tokenizer.json", "generation_config.json"] {
            std::fs::copy(
                family_dir(family).join("model").join(name),
                dir.path().join(name),
            )
            .unwrap();
        }
        for name in ["tokenizer_config.json", "config.json"] {
            std::fs::copy(
                family_dir(family).join("legacy").join(name),
                dir.path().join(name),
            )
            .unwrap();
        }
        let fixture = fixture(family);
        check(family, &artifacts(dir.path(), &fixture), &fixture);
    }
}

/// `train_on` and OpenAI's per-message weights keep a subset of the default masks' supervised runs.
#[test]
fn train_on_and_weights_select_assistant_turns() {
    let fixture = fixture("qwen2");
    let artifacts = artifacts(&family_dir("qwen2").join("model"), &fixture);
    let case = &fixture["cases"].as_array().unwrap()[1];
    assert_eq!(case["name"], "multi_turn");
    let runs = |mask: &[u8]| {
        let mut runs = Vec::new();
        for (i, m) in mask.iter().enumerate() {
            if *m == 1 && (i == 0 || mask[i - 1] == 0) {
                runs.push(i);
            }
        }
        runs
    };
    let encode = |conversation: &Conversation, train_on| {
        let (mut examples, _) =
            encode_conversation(&artifacts, conversation, 1 << 20, train_on).unwrap();
        assert_eq!(examples.len(), 1);
        examples.pop().unwrap()
    };
    let all_turns = encode(&conversation(case), TrainOn::Assistant);
    let default_runs = runs(&all_turns.loss_mask);
    assert_eq!(default_runs.len(), 3);
    let last = encode(&conversation(case), TrainOn::LastAssistant);
    assert_eq!(last.input_ids, all_turns.input_ids);
    assert_eq!(runs(&last.loss_mask), default_runs[2..]);
    let mut weighted = case.clone();
    weighted["messages"][1]["weight"] = json!(0);
    let weighted = encode(&conversation(&weighted), TrainOn::Assistant);
    assert_eq!(runs(&weighted.loss_mask), default_runs[1..]);
    let everything = encode(&conversation(case), TrainOn::All);
    assert!(everything.loss_mask.iter().all(|m| *m == 1));
    assert_eq!(everything.input_ids, all_turns.input_ids);
}
