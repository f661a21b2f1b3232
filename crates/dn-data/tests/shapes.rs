//! Every accepted row shape, file format and bad input.

use dn_data::{ChatMessage, Error, Format, Role, load_conversations, normalize_row};
use serde_json::json;

fn roles(messages: &[ChatMessage]) -> Vec<&'static str> {
    messages.iter().map(|m| m.role.as_str()).collect()
}

/// OpenAI's fine-tuning format: `weight: 0` on an assistant message leaves it out of the loss.
#[test]
fn openai_per_message_weights() {
    let row = json!({"messages": [
        {"role": "user", "content": "q1"}, {"role": "assistant", "content": "bad", "weight": 0},
        {"role": "user", "content": "q2"}, {"role": "assistant", "content": "good", "weight": 1}]});
    let c = normalize_row(&row).unwrap();
    let weights: Vec<_> = c.messages.iter().map(|m| m.weight).collect();
    assert_eq!(weights, [None, Some(0), None, Some(1)]);
}

/// An assistant's reasoning given apart from its content, as Qwen3's data (`reasoning_content`) or
/// gpt-oss's (`thinking`) names it; the template receives it under both names.
#[test]
fn assistant_reasoning_under_either_name() {
    let row = json!({"messages": [
        {"role": "user", "content": "Is 17 prime?"},
        {"role": "assistant", "content": "Yes.", "reasoning_content": "No divisors."},
        {"role": "user", "content": "21?"},
        {"role": "assistant", "content": "No.", "thinking": "3 x 7"},
        {"role": "user", "content": "1?"},
        {"role": "assistant", "content": "No.", "reasoning_content": "  "}]});
    let c = normalize_row(&row).unwrap();
    let reasoning: Vec<_> = c
        .messages
        .iter()
        .map(|m| m.reasoning_content.as_deref())
        .collect();
    assert_eq!(
        reasoning,
        [None, Some("No divisors."), None, Some("3 x 7"), None, None]
    );
    let both = json!({"messages": [{"role": "user", "content": "q"},
        {"role": "assistant", "content": "a", "reasoning_content": "x", "thinking": "y"}]});
    let e = normalize_row(&both).unwrap_err().to_string();
    assert!(e.contains("messages[1].thinking"), "{e}");
    let user = json!({"messages": [{"role": "user", "content": "q", "reasoning_content": "x"}]});
    let e = normalize_row(&user).unwrap_err().to_string();
    assert!(
        e.contains("reasoning_content") && e.contains("assistant"),
        "{e}"
    );
}

#[test]
fn chat_messages_with_text_parts() {
    let c = normalize_row(&json!({"messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Hello "}, "there"]},
        {"role": "assistant", "content": "Hi!"}
    ]}))
    .unwrap();
    assert_eq!(roles(&c.messages), ["system", "user", "assistant"]);
    assert_eq!(c.messages[1].content, "Hello there");
}

#[test]
fn openai_tool_call_rows_both_layouts() {
    let c = normalize_row(&json!({"messages": [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": null, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\": \"Paris\"}"}},
            {"id": "c2", "name": "clock", "arguments": {"tz": "UTC"}}
        ]},
        {"role": "tool", "tool_call_id": "c1", "content": "18C"},
        {"role": "tool", "tool_call_id": "c2", "content": "12:00"},
        {"role": "assistant", "content": "18C at noon."}
    ], "tools": [{"type": "function", "function": {"name": "weather"}}]}))
    .unwrap();
    let calls = &c.messages[1].tool_calls;
    assert_eq!(
        calls[0].function.arguments,
        json!({"city": "Paris"}),
        "JSON-string arguments become an object"
    );
    assert_eq!(
        (calls[1].id.as_str(), calls[1].function.name.as_str()),
        ("c2", "clock")
    );
    assert_eq!(calls[1].function.arguments, json!({"tz": "UTC"}));
    assert_eq!(c.messages[1].content, "");
    assert_eq!(c.messages[2].tool_call_id.as_deref(), Some("c1"));
    assert_eq!(
        c.tools.len(),
        1,
        "native agent records keep their tool schemas"
    );
}

#[test]
fn prompt_completion_aliases() {
    for (prompt_key, completion_key) in [
        ("prompt", "completion"),
        ("input", "output"),
        ("question", "answer"),
        ("task_prompt", "expected_output"),
        ("prompt", "target"),
        ("prompt", "response"),
    ] {
        let c = normalize_row(&json!({prompt_key: "Q", completion_key: "A"})).unwrap();
        assert_eq!(roles(&c.messages), ["user", "assistant"]);
        assert_eq!(
            (
                c.messages[0].content.as_str(),
                c.messages[1].content.as_str()
            ),
            ("Q", "A")
        );
    }
    // First non-empty wins, in the documented order.
    let c = normalize_row(
        &json!({"prompt": "", "input": "from input", "completion": "  ", "answer": 42}),
    )
    .unwrap();
    assert_eq!(
        (
            c.messages[0].content.as_str(),
            c.messages[1].content.as_str()
        ),
        ("from input", "42")
    );
}

#[test]
fn atif_trajectories() {
    let row = json!({
        "schema_version": "ATIF-v1.2", "session_id": "s1",
        "agent": {"name": "pentest", "version": "1.0", "model_name": "m"},
        "extra": {"goal": {"description": "Find the flag"}},
        "steps": [
            {"step_id": 1, "source": "system", "message": "system setup"},
            {"step_id": 2, "source": "user", "message": "Find the flag on host A"},
            {"step_id": 3, "source": "agent", "message": "Listing files.", "reasoning_content": "Start with ls.",
             "tool_calls": [{"tool_call_id": "t1", "function_name": "shell", "arguments": {"cmd": "ls"}}],
             "observation": {"results": [{"source_call_id": "t1", "content": "flag.txt", "is_error": false}]}},
            {"step_id": 4, "source": "agent", "message": "The flag is in flag.txt."}
        ],
        "success": true
    });
    let c = normalize_row(&row).unwrap();
    assert_eq!(
        roles(&c.messages),
        ["user", "assistant", "tool", "assistant"]
    );
    assert_eq!(
        c.messages[1].content,
        "<think>Start with ls.</think>\nListing files."
    );
    assert_eq!(c.messages[1].tool_calls[0].function.name, "shell");
    assert_eq!(c.messages[2].tool_call_id.as_deref(), Some("t1"));
    assert_eq!(
        c.messages.last().unwrap().content,
        "The flag is in flag.txt.",
        "no canned final message"
    );
    // Without a user step, the goal is the task.
    let mut goal_only = row.clone();
    goal_only["steps"].as_array_mut().unwrap().remove(1);
    let c = normalize_row(&goal_only).unwrap();
    assert_eq!(
        (c.messages[0].role, c.messages[0].content.as_str()),
        (Role::User, "Find the flag")
    );
}

#[test]
fn bad_rows_name_the_field() {
    let cases = [
        (json!(["not", "an", "object"]), "expected a JSON object"),
        (json!({"messages": "hi"}), "messages: expected an array"),
        (
            json!({"messages": [{"role": "bot", "content": "x"}]}),
            "messages[0].role: unknown role 'bot'",
        ),
        (
            json!({"messages": [{"content": "x"}]}),
            "messages[0].role: missing",
        ),
        (
            json!({"messages": [{"role": "user", "content": 5}]}),
            "messages[0].content: expected a string",
        ),
        (
            json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": "x"}]}]}),
            "messages[0].content[0].type: 'image_url'",
        ),
        (
            json!({"messages": [{"role": "assistant", "content": "", "tool_calls": [{"id": "x", "function": {"arguments": "{}"}}]}]}),
            "messages[0].tool_calls[0].function.name: missing",
        ),
        (
            json!({"messages": [{"role": "user", "content": "only a question"}]}),
            "no assistant message",
        ),
        (
            json!({"steps": [{"source": "robot"}]}),
            "steps[0].source: unknown source 'robot'",
        ),
        (
            json!({"steps": [{"source": "agent", "tool_calls": [{"arguments": {}}]}]}),
            "steps[0].tool_calls[0].function_name: missing",
        ),
        (json!({"prompt": "Q"}), "matches no row shape"),
        (json!({"answer": "A"}), "no prompt"),
        (json!({"text": "raw"}), "found keys [text]"),
        (
            json!({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "weight": 0.5}]}),
            "messages[1].weight: expected 0 or 1",
        ),
        (
            json!({"messages": [{"role": "user", "content": "q", "weight": 1}, {"role": "assistant", "content": "a"}]}),
            "messages[0].weight: only assistant messages",
        ),
    ];
    for (row, needle) in cases {
        let err = normalize_row(&row).unwrap_err();
        assert!(
            err.contains(needle),
            "{row}: {err:?} should contain {needle:?}"
        );
    }
}

#[test]
fn jsonl_json_and_csv_files() {
    let jsonl = b"{\"prompt\":\"a\",\"completion\":\"b\"}\n\n{not json}\n{\"messages\":[{\"role\":\"user\",\"content\":\"q\"},{\"role\":\"assistant\",\"content\":\"r\"}]}\n\xff\xfe\n";
    let loaded = load_conversations(jsonl, Format::Jsonl, "train.jsonl").unwrap();
    assert_eq!(loaded.conversations.len(), 2);
    let messages: Vec<String> = loaded.errors.iter().map(|e| e.to_string()).collect();
    assert!(
        messages[0].starts_with("train.jsonl: row 3: invalid JSON"),
        "{messages:?}"
    );
    assert!(
        messages[1].starts_with("train.jsonl: row 5: invalid UTF-8"),
        "{messages:?}"
    );

    let json =
        br#"[{"question": "q1", "answer": "a1"}, {"nope": 1}, {"input": "q3", "output": "a3"}]"#;
    let loaded = load_conversations(json, Format::Json, "rows.json").unwrap();
    assert_eq!(loaded.conversations.len(), 2);
    assert!(
        matches!(&loaded.errors[0], Error::Row { file, row: 2, message } if file == "rows.json" && message.starts_with("matches no row shape"))
    );

    let csv = b"prompt,completion,messages\n\"Hello, you\",Hi,\nx,,\"[{\"\"role\"\":\"\"user\"\",\"\"content\"\":\"\"u\"\"},{\"\"role\"\":\"\"assistant\"\",\"\"content\"\":\"\"v\"\"}]\"\n";
    let loaded = load_conversations(csv, Format::Csv, "rows.csv").unwrap();
    assert_eq!(loaded.errors, vec![], "the messages column holds JSON");
    assert_eq!(loaded.conversations[0].messages[0].content, "Hello, you");
    assert_eq!(loaded.conversations[1].messages[1].content, "v");
}

#[test]
fn unreadable_files_are_file_errors() {
    for (bytes, format, needle) in [
        (&b""[..], Format::Jsonl, "the file is empty"),
        (b"  \n\n", Format::Jsonl, "the file is empty"),
        (b"[1, 2", Format::Json, "invalid JSON"),
        (
            b"\"just a string\"",
            Format::Json,
            "expected an array of rows",
        ),
        (b"\xff\xfe[]", Format::Json, "invalid UTF-8"),
    ] {
        let err = load_conversations(bytes, format, "f").unwrap_err();
        assert!(err.to_string().contains(needle), "{err}");
    }
    let err = load_conversations(b"ARROW1", Format::Arrow, "d.arrow").unwrap_err();
    assert!(err.to_string().contains("cannot be read yet"), "{err}");
    let err = load_conversations(b"PAR1 not really", Format::Parquet, "d.parquet").unwrap_err();
    assert!(
        err.to_string().contains("not a readable Parquet file"),
        "{err}"
    );
}

mod never_panics {
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            for format in [dn_data::Format::Jsonl, dn_data::Format::Json, dn_data::Format::Csv, dn_data::Format::Parquet] {
                let _ = dn_data::load_conversations(&bytes, format, "fuzz");
            }
        }

        #[test]
        fn on_arbitrary_json(value in arbitrary_json()) {
            let _ = dn_data::normalize_row(&value);
            let _ = dn_data::normalize_row(&serde_json::json!({"messages": [value.clone()]}));
            let _ = dn_data::normalize_row(&serde_json::json!({"steps": [value.clone()]}));
            let _ = dn_data::normalize_row(&serde_json::json!({"prompt": value.clone(), "completion": value}));
        }
    }

    fn arbitrary_json() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            prop_oneof![
                Just("role".to_owned()),
                Just("assistant".to_owned()),
                Just("agent".to_owned()),
                ".*"
            ]
            .prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            let keys = prop_oneof![
                Just("role".to_owned()),
                Just("content".to_owned()),
                Just("tool_calls".to_owned()),
                Just("function".to_owned()),
                Just("source".to_owned()),
                Just("message".to_owned()),
                Just("observation".to_owned()),
                Just("results".to_owned()),
                Just("text".to_owned()),
                "[a-z]{1,6}",
            ];
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
                proptest::collection::btree_map(keys, inner, 0..6)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }
}

/// Written by scripts/reference/parquet_fixture.py (pyarrow).
#[test]
fn parquet_files() {
    let bytes = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/rows.parquet"
    ))
    .unwrap();
    let loaded = load_conversations(&bytes, Format::Parquet, "rows.parquet").unwrap();
    assert_eq!(loaded.conversations.len(), 2);
    assert_eq!(
        loaded.conversations[0].messages[1].content,
        "Hello from parquet"
    );
    assert_eq!(
        roles(&loaded.conversations[1].messages),
        ["user", "assistant"]
    );
    assert_eq!(loaded.conversations[1].messages[1].content, "4");
    assert!(
        matches!(&loaded.errors[..], [Error::Row { row: 3, .. }]),
        "{:?}",
        loaded.errors
    );
}

/// Truncated Parquet files (every length) give errors, never panics. (Byte flips inside page headers can
/// make the parquet crate allocate without bound: a known limitation noted in ARCHITECTURE.md.)
#[test]
fn truncated_parquet_never_panics() {
    let good = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/rows.parquet"
    ))
    .unwrap();
    for i in 0..good.len() {
        assert!(load_conversations(&good[..i], Format::Parquet, "cut.parquet").is_err());
    }
}

/// A prompt to complete needs no answer: `row_conversation` takes a user-only row that training data
/// (`normalize_row`) refuses, and still names what is wrong with a malformed one.
#[test]
fn prompts_need_no_assistant_message() {
    let row = json!({"messages": [{"role": "user", "content": "only a question"}]});
    assert!(normalize_row(&row).is_err());
    let conversation = dn_data::row_conversation(&row).unwrap();
    assert_eq!(roles(&conversation.messages), vec!["user"]);
    let bad = json!({"messages": [{"content": "x"}]});
    assert_eq!(
        dn_data::row_conversation(&bad).unwrap_err(),
        "messages[0].role: missing"
    );
}
