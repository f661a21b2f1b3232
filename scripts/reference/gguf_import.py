"""Reference for `dn model import`: the GGUF's tensors dequantized by gguf-py and un-permuted by
transformers' own LlamaTensorProcessor, summarized per transformers tensor name (shape, sums, sample values).
Writes crates/dn-render/tests/fixtures/smollm2_import_reference.json. Run: scripts/reference/run.sh gguf-import"""

import json
import pathlib
import sys

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize
from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

gguf_path, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
reader = GGUFReader(gguf_path)
field = lambda key: reader.fields[key].contents()
processor = LlamaTensorProcessor(
    config={"num_attention_heads": field("llama.attention.head_count"), "num_key_value_heads": field("llama.attention.head_count_kv")}
)
LAYER = {
    "attn_q.weight": "self_attn.q_proj.weight", "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight", "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight", "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight", "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
}
FIXED = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight", "output.weight": "lm_head.weight"}


def hf_name(name):
    if name in FIXED:
        return FIXED[name]
    _, layer, part = name.split(".", 2)
    return f"model.layers.{layer}.{LAYER[part]}"


tensors = {}
for t in reader.tensors:
    shape = [int(d) for d in reversed(t.shape)]
    values = dequantize(t.data, t.tensor_type).astype(np.float32).reshape(shape)
    values = processor.process(values, t.name).weights.reshape(-1)
    rng = np.random.default_rng(len(tensors))
    picks = sorted(int(i) for i in rng.integers(0, values.size, 8))
    tensors[hf_name(t.name)] = {
        "shape": shape,
        "sum": float(values.astype(np.float64).sum()),
        "abs_sum": float(np.abs(values.astype(np.float64)).sum()),
        "first": [float(v) for v in values[:8]],
        "picks": [[i, float(values[i])] for i in picks],
    }
out.write_text(json.dumps({"gguf": gguf_path.name, "tensors": tensors}, indent=1) + "\n")
print(f"wrote {len(tensors)} tensors to {out}")
