"""GGUF files of the tiny qwen2 and qwen3 models, written with gguf-py as llama.cpp's converter lays them
out (qwen2/qwen3 metadata keys, llama.cpp tensor names, q/k rows as they are, the byte-level BPE tokenizer
with its `qwen2` pre-tokenizer, the chat template), and transformers' tokenization of sample texts from the
GGUF (the tokenizer transformers builds from a GGUF is the reference for dn's).

Writes tests/fixtures/families/<family>/model.gguf and gguf_tokens.json. Run: scripts/reference/run.sh families"""

import json
import pathlib
import sys

import gguf
import numpy as np
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer

ROOT = pathlib.Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fixtures" / "families"

SAMPLES = [
    "What is 2+2? It is 4.",
    "  leading spaces, trailing\n\nnewlines\t tabs",
    "<|im_start|>user\nHello<|im_end|>\n<think>\nreasoning\n</think>\n\nanswer",
    "don't you'll we've 12345 ¿Qué tal? naïve café",
]

TENSORS = {
    "self_attn.q_proj.weight": "attn_q.weight", "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight", "self_attn.o_proj.weight": "attn_output.weight",
    "self_attn.q_proj.bias": "attn_q.bias", "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.bias": "attn_v.bias",
    "self_attn.q_norm.weight": "attn_q_norm.weight", "self_attn.k_norm.weight": "attn_k_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight", "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
    "input_layernorm.weight": "attn_norm.weight", "post_attention_layernorm.weight": "ffn_norm.weight",
}


def gguf_name(name):
    if name == "model.embed_tokens.weight":
        return "token_embd.weight"
    if name == "model.norm.weight":
        return "output_norm.weight"
    if name == "lm_head.weight":
        return "output.weight"
    _, _, layer, rest = name.split(".", 3)
    return f"blk.{layer}.{TENSORS[rest]}"


def write(family, dtype):
    model_dir = OUT / family / "model"
    config = json.loads((model_dir / "config.json").read_text())
    tok = AutoTokenizer.from_pretrained(model_dir)
    backend = json.loads(tok.backend_tokenizer.to_str())
    path = OUT / family / "model.gguf"
    w = gguf.GGUFWriter(str(path), arch=family)
    w.add_name(f"tiny-{family}")
    w.add_block_count(config["num_hidden_layers"])
    w.add_context_length(config["max_position_embeddings"])
    w.add_embedding_length(config["hidden_size"])
    w.add_feed_forward_length(config["intermediate_size"])
    w.add_head_count(config["num_attention_heads"])
    w.add_head_count_kv(config["num_key_value_heads"])
    head_dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
    w.add_key_length(head_dim)
    w.add_value_length(head_dim)
    rope = config["rope_parameters"]
    w.add_rope_freq_base(rope["rope_theta"])
    if rope["rope_type"] == "yarn":
        w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        w.add_rope_scaling_factor(rope["factor"])
        w.add_rope_scaling_orig_ctx_len(rope["original_max_position_embeddings"])
    w.add_layer_norm_rms_eps(config["rms_norm_eps"])
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if dtype == np.float16 else gguf.LlamaFileType.ALL_F32)
    tokens = tok.convert_ids_to_tokens(list(range(len(tok))))
    added = {t["id"]: t for t in backend["added_tokens"]}
    types = [
        gguf.TokenType.CONTROL if i in added and added[i]["special"]
        else gguf.TokenType.USER_DEFINED if i in added else gguf.TokenType.NORMAL
        for i in range(len(tokens))
    ]
    merges = [m if isinstance(m, str) else " ".join(m) for m in backend["model"]["merges"]]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_eos_token_id(tok.convert_tokens_to_ids(tok.eos_token))
    w.add_pad_token_id(tok.convert_tokens_to_ids(tok.pad_token))
    w.add_add_bos_token(False)
    w.add_chat_template((model_dir / "chat_template.jinja").read_text())
    tensors = load_file(str(model_dir / "model.safetensors"))
    for name in sorted(tensors):
        values = tensors[name].to(torch.float32).numpy()
        # Norms and biases stay f32, as llama.cpp's converter keeps 1-D tensors.
        w.add_tensor(gguf_name(name), values.astype(dtype if values.ndim == 2 else np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    from_gguf = AutoTokenizer.from_pretrained(OUT / family, gguf_file="model.gguf")
    samples = [{"text": t, "input_ids": from_gguf(t, add_special_tokens=False)["input_ids"]} for t in SAMPLES]
    (OUT / family / "gguf_tokens.json").write_text(json.dumps({
        "source": "scripts/reference/family_gguf.py (transformers' tokenizer from the GGUF)",
        "samples": samples,
    }, ensure_ascii=False, indent=1) + "\n")
    print(f"{family}: {path.name} ({path.stat().st_size} bytes), {len(samples)} tokenized samples")


only = sys.argv[1:]
for family, dtype in [("qwen2", np.float32), ("qwen3", np.float16)]:
    if not only or family in only:
        write(family, dtype)
