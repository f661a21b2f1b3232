"""Checks dn's GGUF export of SmolLM2 with the PEFT adapter of tests/fixtures/generate:
- the `gguf` package reads it with the expected metadata, and its tensors equal dn's merged model directory
  (f32: exactly, after undoing llama.cpp's q/k row permutation; q8_0: within half a quantization step);
- llama.cpp (llama-cpp-python) loads it and greedily generates the tokens transformers + PEFT generate
  (tests/fixtures/generate/smollm2.json) from the same prompt ids.
Writes tests/fixtures/generate/gguf_check.json. Run: scripts/reference/run.sh gguf-check."""

import json
import pathlib
import sys

import numpy as np
from gguf import GGUFReader
from safetensors.numpy import load_file

f32_path, q8_path, merged_dir, reference, out = (pathlib.Path(p) for p in sys.argv[1:6])
result = {"source": "scripts/reference/gguf_check.py"}

reader = GGUFReader(str(f32_path))
fields = {name: field for name, field in reader.fields.items()}


def text(name):
    field = fields[name]
    return bytes(field.parts[field.data[0]]).decode()


def scalar(name):
    field = fields[name]
    return field.parts[field.data[0]].tolist()[0]


result["metadata"] = {
    "general.architecture": text("general.architecture"),
    "llama.block_count": scalar("llama.block_count"),
    "llama.embedding_length": scalar("llama.embedding_length"),
    "llama.attention.head_count_kv": scalar("llama.attention.head_count_kv"),
    "tokenizer.ggml.model": text("tokenizer.ggml.model"),
    "tokenizer.ggml.pre": text("tokenizer.ggml.pre"),
    "tokens": len(fields["tokenizer.ggml.tokens"].data),
    "has_chat_template": "tokenizer.chat_template" in fields,
    "tensors": len(reader.tensors),
}
heads, kv_heads = scalar("llama.attention.head_count"), scalar("llama.attention.head_count_kv")
names = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight"}
block = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
         "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
         "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm"}
merged = load_file(str(merged_dir / "model.safetensors"))


def hf_name(name):
    if name in names:
        return names[name]
    _, layer, part, _ = name.split(".")
    return f"model.layers.{layer}.{block[part]}.weight"


def unpermute(w, n_heads):
    rows, cols = w.shape
    return w.reshape(n_heads, rows // n_heads // 2, 2, cols).swapaxes(1, 2).reshape(rows, cols)


def compare(path, tolerance):
    worst = 0.0
    for t in GGUFReader(str(path)).tensors:
        want = merged[hf_name(t.name)]
        got = np.array(t.data)
        if t.tensor_type.name == "Q8_0":
            from gguf.quants import dequantize
            got = dequantize(t.data, t.tensor_type)
        got = got.reshape(want.shape).astype(np.float32)
        if t.name.endswith("attn_q.weight"):
            got = unpermute(got, heads)
        elif t.name.endswith("attn_k.weight"):
            got = unpermute(got, kv_heads)
        scale = np.abs(want).max(axis=-1, keepdims=True) if want.ndim == 2 else np.abs(want).max()
        worst = max(worst, float((np.abs(got - want) / np.maximum(scale, 1e-12)).max()))
    return {"worst_relative_to_row_max": worst, "passed": worst <= tolerance}


result["f32_tensors"] = compare(f32_path, 0.0)
result["q8_0_tensors"] = compare(q8_path, 0.5 / 127 + 1e-3)

from llama_cpp import Llama  # noqa: E402

ref = json.loads(reference.read_text())
llm = Llama(model_path=str(f32_path), n_ctx=256, logits_all=False, verbose=False, n_threads=2)
generated = []
for prompt, want in zip(ref["prompts"], ref["tokens"]):
    llm.reset()
    tokens = []
    for token in llm.generate(prompt, top_k=1, temp=0.0, repeat_penalty=1.0):
        tokens.append(token)
        if len(tokens) == len(want):
            break
    generated.append({"tokens": tokens, "equal": tokens == want,
                      "first_difference": next((i for i, (a, b) in enumerate(zip(tokens, want)) if a != b), None)})
result["llama_cpp_greedy"] = generated
result["passed"] = (result["f32_tensors"]["passed"] and result["q8_0_tensors"]["passed"]
                    and all(g["equal"] for g in generated))
out.write_text(json.dumps(result, indent=1) + "\n")
print(json.dumps(result, indent=1))
sys.exit(0 if result["passed"] else 1)
