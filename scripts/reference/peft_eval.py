"""Checks a dn job's final adapter with PEFT: loads SmolLM2-135M-Instruct in transformers (dequantized GGUF,
float32), applies the adapter with PeftModel.from_pretrained, computes the mean NLL over supervised tokens of
the eval examples (token ids and loss masks as dn prepared them, from `dn data preview --json`), and compares
it with the job's eval/loss. Run: scripts/reference/peft_eval.sh"""

import json
import pathlib
import sys

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

gguf, job_file, examples_file = (pathlib.Path(a) for a in sys.argv[1:4])
job = json.loads(job_file.read_text())
adapter = job["artifacts"]["adapter"]
examples = [json.loads(line) for line in examples_file.read_text().splitlines() if line.strip()]

base = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
model = PeftModel.from_pretrained(base, adapter)
model.eval()


def mean_nll():
    total, count = 0.0, 0
    with torch.no_grad():
        for e in examples:
            ids, mask = e["input_ids"], e["loss_mask"]
            logits = model(input_ids=torch.tensor([ids])).logits[0].double()
            logp = torch.log_softmax(logits[:-1], dim=-1)
            nll = -logp.gather(1, torch.tensor(ids[1:])[:, None])[:, 0]
            m = torch.tensor(mask[1:], dtype=torch.float64)
            total += float((nll * m).sum())
            count += int(m.sum())
    return total / count, count


peft_loss, tokens = mean_nll()
with model.disable_adapter():
    base_loss, _ = mean_nll()
dn_loss = job["metrics"]["eval/loss"]
rel = abs(peft_loss - dn_loss) / abs(peft_loss)
print(f"adapter: {adapter}")
print(f"eval examples: {len(examples)}, supervised tokens: {tokens}")
print(f"base model eval loss (PEFT adapter disabled): {base_loss:.6f}")
print(f"PEFT eval loss with dn's adapter:             {peft_loss:.6f}")
print(f"dn job eval/loss:                             {dn_loss:.6f}")
print(f"relative difference: {rel:.2e} ({'ok' if rel < 1e-3 else 'FAILED'}: tolerance 1e-3)")
sys.exit(0 if rel < 1e-3 and abs(base_loss - peft_loss) > 1e-3 else 1)
