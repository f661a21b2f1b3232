"""Reference for the trainer: SmolLM2-135M-Instruct loaded by transformers from the GGUF (dequantized, float32),
LoRA by PEFT (r=8, alpha=16, all seven projections, dropout 0) with lora_A set by a closed formula both sides
compute and lora_B = 0 (PEFT's init), trained 3 AdamW steps (lr 1e-3, betas 0.9/0.95, eps 1e-8, no weight decay,
global-norm clip 1.0) on a fixed batch of ChatML conversations, loss = summed NLL of supervised tokens / their
count. Writes the batch (ids + masks), the loss of each step (before its update) and sampled logits after the
last step. Run: scripts/reference/run.sh train-parity"""

import json
import math
import pathlib
import sys

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

torch.manual_seed(0)
gguf = pathlib.Path(sys.argv[1])
out = pathlib.Path(sys.argv[2])
tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, torch_dtype=torch.float32)
model.eval()  # no dropout anywhere; gradients still flow

CONVERSATIONS = [
    [("system", "You are a support agent for Acme Cloud. Be brief and exact."),
     ("user", "My deploy failed with error E42. What does it mean?"),
     ("assistant", "E42 means the build image exceeded the 2 GB limit. Remove unused layers and deploy again.")],
    [("user", "How do I rotate an API key?"),
     ("assistant", "Open Settings > API keys, choose Rotate, then update your clients with the new key."),
     ("user", "Will the old key stop working at once?"),
     ("assistant", "No: the old key keeps working for 24 hours so you can roll out the new one.")],
    [("system", "You are terse."),
     ("user", "Status of region eu-west-3?"),
     ("assistant", "Operational. No incidents in the last 7 days.")],
]


def encode(conversation):
    ids, mask = [], []
    for role, content in conversation:
        head = tok.encode(f"<|im_start|>{role}\n", add_special_tokens=False)
        body = tok.encode(f"{content}<|im_end|>", add_special_tokens=False)
        tail = tok.encode("\n", add_special_tokens=False)
        ids += head + body + tail
        mask += [0] * len(head) + [1 if role == "assistant" else 0] * len(body) + [0] * len(tail)
    return ids, mask


batch = [encode(c) for c in CONVERSATIONS]
RANK, ALPHA, STEPS, LR = 8, 16, 3, 1e-3
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
peft_model = get_peft_model(model, LoraConfig(r=RANK, lora_alpha=ALPHA, lora_dropout=0.0, target_modules=TARGETS))


def init_a(rows, cols, ordinal):
    """A[i, j] = sin(0.7 * (i * cols + j) + 1.3 * ordinal) / sqrt(cols), ordinal = layer * 7 + target index."""
    bound = 1.0 / math.sqrt(cols)
    k = torch.arange(rows * cols, dtype=torch.float64)
    return (torch.sin(0.7 * k + 1.3 * ordinal) * bound).reshape(rows, cols).float()


with torch.no_grad():
    for layer in range(model.config.num_hidden_layers):
        for t, target in enumerate(TARGETS):
            part = "self_attn" if target in TARGETS[:4] else "mlp"
            module = peft_model.base_model.model.model.layers[layer].__getattr__(part).__getattr__(target)
            a = module.lora_A["default"].weight
            a.copy_(init_a(a.shape[0], a.shape[1], layer * 7 + t))
            module.lora_B["default"].weight.zero_()

params = [p for p in peft_model.parameters() if p.requires_grad]
opt = torch.optim.AdamW(params, lr=LR, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0)
normaliser = sum(sum(m[1:]) for _, m in batch)


def summed_nll():
    total = 0.0
    for ids, mask in batch:
        logits = peft_model(input_ids=torch.tensor([ids])).logits[0].float()
        logp = torch.log_softmax(logits[:-1], dim=-1)
        target = torch.tensor(ids[1:])
        nll = -logp.gather(1, target[:, None])[:, 0]
        total = total + (nll * torch.tensor(mask[1:], dtype=torch.float32)).sum()
    return total


losses = []
for step in range(STEPS):
    opt.zero_grad()
    loss = summed_nll() / normaliser
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    losses.append(loss.item())
    print(f"step {step + 1}: loss {loss.item():.6f}")

# Logits after the last update at the first 3 supervised predictor rows of each example (rows index the
# example's own tokens), every 97th vocabulary entry.
rows, samples = [], []
with torch.no_grad():
    offset = 0
    for ids, mask in batch:
        logits = peft_model(input_ids=torch.tensor([ids])).logits[0].float()
        picked = [t - 1 for t in range(1, len(ids)) if mask[t] == 1][:3]
        for r in picked:
            rows.append(offset + r)
            samples.append([round(float(x), 6) for x in logits[r, ::97]])
        offset += len(ids)

out.write_text(json.dumps({
    "source": "scripts/reference/train_parity.py (torch %s, transformers, peft)" % torch.__version__,
    "rank": RANK, "alpha": ALPHA, "learning_rate": LR, "steps": STEPS,
    "examples": [{"input_ids": ids, "loss_mask": mask} for ids, mask in batch],
    "normaliser": normaliser, "losses": losses,
    "logit_rows": rows, "logit_stride": 97, "logits": samples,
}, indent=1) + "\n")
