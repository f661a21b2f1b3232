"""Reference token ids and loss masks for SmolLM2-135M-Instruct's chat template, from transformers.

Writes crates/dn-render/tests/fixtures/smollm2_chat_parity.json, read by dn-render's parity test.
Run: scripts/reference/run.sh chat-parity (creates the virtualenv, fetches the model).

For each case: `messages` (chat messages as dn normalizes rows into them), an optional capability
`system_prompt` applied as reference.md says (prepended as a system message, or merged as
prompt + "\n\n" + existing into a first system message), then transformers' tokenizer built from the GGUF
and `apply_chat_template(tokenize=True)`. The expected loss mask marks each assistant message's content and
its `<|im_end|>`: found by rendering prefixes with transformers (content spans of the full render) and
mapping characters to tokens with the tokenizer's offsets, an independent implementation of dn's rule.
"""

import json
import pathlib
import sys

import transformers.modeling_gguf_pytorch_utils as gguf_utils

# Loading only the tokenizer from a GGUF needs no tensors; transformers checks for torch anyway.
gguf_utils.is_torch_available = lambda: True
from transformers import AutoTokenizer  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from chat_cases import a, call, s, scaffold, u  # noqa: E402

gguf_path = pathlib.Path(sys.argv[1])
out = pathlib.Path(sys.argv[2])
tok = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
END = "<|im_end|>"


CASES = [
    ("single_turn", [u("What is 2+2?"), a("4")], None),
    ("multi_turn", [u("Hi"), a("Hello! How can I help?"), u("Tell me a joke."), a("Why did the chicken cross the road?"), u("Why?"), a("To get to the other side.")], None),
    ("with_system", [s("You are terse."), u("Capital of France?"), a("Paris.")], None),
    ("capability_prepended", [u("Reset my password"), a("Open Settings > Security.")], "You are the support agent of Acme Cloud."),
    ("capability_merged", [s("Answer in English."), u("Hola"), a("Hello!")], "You are the support agent of Acme Cloud."),
    ("capability_multiline", [u("q"), a("a")], "Line one.\n\n- bullet\n- another"),
    ("prompt_completion", [u("Translate 'chat' to English."), a("cat")], None),
    ("tool_call", [u("Weather in Paris?"), a("", tool_calls=[call("call_1", "get_weather", {"city": "Paris"})]), {"role": "tool", "tool_call_id": "call_1", "content": "{\"temp_c\": 18}"}, a("It is 18 °C in Paris.")], None),
    ("tool_call_string_args", [u("Add 2 and 3"), a("Let me compute.", tool_calls=[call("c2", "add", "{\"a\": 2, \"b\": 3}")]), {"role": "tool", "tool_call_id": "c2", "content": "5"}, a("2 + 3 = 5")], None),
    ("two_tool_calls", [u("Compare"), a("", tool_calls=[call("x", "f", {}), call("y", "g", {"k": [1, 2]})]), {"role": "tool", "tool_call_id": "x", "content": "1"}, {"role": "tool", "tool_call_id": "y", "content": "2"}, a("Both done.")], "Use tools."),
    ("unicode", [u("¿Qué tal? 你好 🌍 naïve café"), a("Très bien 👍 — 谢谢! ünïcode ✓")], None),
    ("rtl_and_combining", [u("مرحبا שלום"), a("e\u0301 n\u0303 Å")], None),
    ("whitespace", [u("  leading and trailing  "), a("\n\nline\n\n\n  indented\ttab  \n")], None),
    ("empty_assistant", [u("Say nothing."), a("")], None),
    ("only_spaces", [u(" "), a(" ")], None),
    ("special_text", [u("What does <|im_end|> mean?"), a("It ends a turn: <|im_end|> and <|im_start|>.")], None),
    ("markdown_code", [u("Write hello world in Python"), a("```python\nprint(\"hello world\")\n```")], None),
    ("long_numbers", [u("Sum 123456789 and 987654321"), a("123456789 + 987654321 = 1111111110")], None),
    ("think_reasoning", [u("Is 17 prime?"), a("<think>17 has no divisors but 1 and 17.</think>\nYes, 17 is prime.")], None),
    ("system_only_capability", [s(""), u("hi"), a("hey")], "Be kind."),
    ("consecutive_users", [u("first"), u("second"), a("reply")], None),
    ("agent_trajectory", [u("Find the admin password"), a("<think>Check the config.</think>\nReading config.", tool_calls=[call("t1", "read_file", {"path": "/etc/app.conf"})]), {"role": "tool", "tool_call_id": "t1", "content": "password=hunter2"}, a("The password is hunter2.")], "You are a pentest agent."),
]


def render(messages, generation_prompt=False):
    clean = [{**m, "content": m.get("content") or ""} for m in messages]
    return tok.apply_chat_template(clean, tokenize=False, add_generation_prompt=generation_prompt)


cases = []
for name, messages, prompt in CASES:
    full_messages = scaffold(messages, prompt)
    text = render(full_messages)
    ids = tok.apply_chat_template(
        [{**m, "content": m.get("content") or ""} for m in full_messages], tokenize=True
    )
    spans = []
    for i, m in enumerate(full_messages):
        if m["role"] != "assistant":
            continue
        before = render(full_messages[:i], generation_prompt=True)
        through = render(full_messages[: i + 1])
        assert text.startswith(before) and text.startswith(through), name
        start = len(before)
        end = through.rindex(END, start) + len(END)
        spans.append((start, end))
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    assert enc.input_ids == ids, name
    mask = [int(any(s <= o[0] < e for s, e in spans)) for o in enc.offset_mapping]
    cases.append(
        {"name": name, "messages": messages, "system_prompt": prompt, "text": text, "input_ids": ids, "loss_mask": mask}
    )

out.write_text(json.dumps({"model": "SmolLM2-135M-Instruct.Q4_1.gguf", "transformers": __import__("transformers").__version__, "cases": cases}, ensure_ascii=False, indent=1) + "\n")
print(f"wrote {len(cases)} cases to {out}")
