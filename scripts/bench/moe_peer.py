"""The peer of the mixture-of-experts benchmark: transformers 5 + PEFT on CPU, LoRA r16 / alpha 32 on the
attention projections (target_modules) and on every expert's gate_up_proj and down_proj (PEFT's
target_parameters), the training loop TRL's SFTTrainer runs (batches of padded examples, loss on the
loss_mask only, AdamW betas 0.9/0.95, eps 1e-8, clip 1.0, constant LR), one epoch on the same pre-tokenized
examples dn trains on. Writes one JSON result. Usage: moe_peer.py MODEL_DIR EXAMPLES.jsonl BATCH LR OUT.json"""

import json
import resource
import sys
import time

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

model_dir, examples_file, batch, lr, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
examples = [json.loads(l) for l in open(examples_file) if l.strip()]
model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
model = get_peft_model(model, LoraConfig(
    r=16, lora_alpha=32, lora_dropout=0.0, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
    target_parameters=["mlp.experts.gate_up_proj", "mlp.experts.down_proj"]))
model.train()
params = [p for p in model.parameters() if p.requires_grad]
opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0)
times, losses, tokens, supervised = [], [], 0, 0
for start in range(0, len(examples), batch):
    chunk = examples[start:start + batch]
    length = max(len(e["input_ids"]) for e in chunk)
    ids = torch.zeros(len(chunk), length, dtype=torch.long)
    labels = torch.full((len(chunk), length), -100, dtype=torch.long)
    attention = torch.zeros(len(chunk), length, dtype=torch.long)
    for i, e in enumerate(chunk):
        n = len(e["input_ids"])
        ids[i, :n] = torch.tensor(e["input_ids"])
        attention[i, :n] = 1
        mask = torch.tensor(e["loss_mask"], dtype=torch.bool)
        labels[i, :n] = torch.where(mask, ids[i, :n], torch.tensor(-100))
        tokens += n
        supervised += int(mask[1:].sum())
    began = time.perf_counter()
    opt.zero_grad()
    loss = model(input_ids=ids, attention_mask=attention, labels=labels).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    times.append(time.perf_counter() - began)
    losses.append(loss.item())
result = {
    "system": f"transformers {__import__('transformers').__version__} + PEFT {__import__('peft').__version__} (f32)",
    "steps": len(times), "examples": len(examples), "tokens": tokens, "supervised_tokens": supervised,
    "seconds": sum(times), "step_seconds": times, "last_loss": losses[-1],
    "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
}
json.dump(result, open(out, "w"))
print(json.dumps(result))
