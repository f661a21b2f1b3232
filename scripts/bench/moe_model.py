"""A Qwen3-MoE-shaped random model for the mixture-of-experts benchmark: 8 layers, hidden 768, 12 heads
(4 key/value heads of 64), 32 experts of width 512 with the top 4 routed and renormalised, a 32000-token
vocabulary: 364M parameters, 100M active per token. Saved by transformers 5 in float32 (its experts one by
one, as hub repos hold them). Usage: moe_model.py OUT_DIR"""

import sys

import torch
from transformers import AutoModelForCausalLM, Qwen3MoeConfig

out = sys.argv[1]
config = Qwen3MoeConfig(
    vocab_size=32000, hidden_size=768, intermediate_size=2048, moe_intermediate_size=512,
    num_hidden_layers=8, num_attention_heads=12, num_key_value_heads=4, head_dim=64,
    num_experts=32, num_experts_per_tok=4, norm_topk_prob=True, max_position_embeddings=4096,
    tie_word_embeddings=False, rope_parameters=dict(rope_type="default", rope_theta=1000000.0),
)
torch.manual_seed(0)
model = AutoModelForCausalLM.from_config(config)
total = sum(p.numel() for p in model.parameters())
print(f"{total / 1e6:.0f}M parameters")
model.to(torch.float32).save_pretrained(out)
