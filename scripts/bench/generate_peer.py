"""The peer of `cargo bench -p dn-train --bench generate`: transformers + PEFT `generate` on the same
shapes (SmolLM2-135M-Instruct dequantized to f32 from the test model's GGUF, LoRA r16 alpha 32 on all seven
projections, unmerged; greedy, no stop, NEW new tokens after a 32-token prompt; batch 1 and 8), on the CPU
with torch's default threads. Run: scripts/bench/generate_peer.sh [NEW]."""

import pathlib
import sys
import time

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

gguf = pathlib.Path(sys.argv[1])
new = int(sys.argv[2]) if len(sys.argv) > 2 else 256
model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
model.eval()
model.generation_config.eos_token_id = None
targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
peft_model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=targets))
peft_model.eval()
print(f"threads: {torch.get_num_threads()}, {new} new tokens per sequence, 32-token prompts")
for batch in [1, 8]:
    prompts = torch.tensor([[(b * 131 + i * 17) % 49152 for i in range(32)] for b in range(batch)])
    with torch.no_grad():
        started = time.perf_counter()
        out = peft_model.generate(
            input_ids=prompts, attention_mask=torch.ones_like(prompts), max_new_tokens=new,
            min_new_tokens=new, do_sample=False, eos_token_id=None, pad_token_id=0,
            temperature=None, top_p=None, top_k=None)
        seconds = time.perf_counter() - started
    tokens = (out.shape[1] - prompts.shape[1]) * batch
    print(f"batch {batch}: {tokens} tokens in {seconds:.2f}s: {tokens / seconds:.1f} tokens/s")
