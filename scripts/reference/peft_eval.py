"""Checks a dn job's final adapter with PEFT: loads SmolLM2-135M-Instruct in transformers (dequantized GGUF,
float32), applies the adapter with PeftModel.from_pretrained, computes the mean NLL over supervised tokens of
the eval examples (token ids and loss masks as dn prepared them, from `dn data preview --json`), and compares
it with the job's eval/loss. Run: scripts/reference/run.sh peft-eval"""

import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).parent))

import torch
from peft import PeftModel
from peft_check import adapter_and_base_losses
from transformers import AutoModelForCausalLM

gguf, job_file, examples_file = (pathlib.Path(a) for a in sys.argv[1:4])
job = json.loads(job_file.read_text())
# Local storage reports the adapter's key, relative to the storage directory (the last argument).
adapter = str(pathlib.Path(sys.argv[-1]) / job["artifacts"]["adapter"])
examples = [json.loads(line) for line in examples_file.read_text().splitlines() if line.strip()]

base = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
model = PeftModel.from_pretrained(base, adapter)
model.eval()

peft_loss, tokens, base_loss = adapter_and_base_losses(model, examples)
dn_loss = job["metrics"]["eval/loss"]
rel = abs(peft_loss - dn_loss) / abs(peft_loss)
print(f"adapter: {adapter}")
print(f"eval examples: {len(examples)}, supervised tokens: {tokens}")
print(f"base model eval loss (PEFT adapter disabled): {base_loss:.6f}")
print(f"PEFT eval loss with dn's adapter:             {peft_loss:.6f}")
print(f"dn job eval/loss:                             {dn_loss:.6f}")
print(f"relative difference: {rel:.2e} ({'ok' if rel < 1e-3 else 'FAILED'}: tolerance 1e-3)")
sys.exit(0 if rel < 1e-3 and abs(base_loss - peft_loss) > 1e-3 else 1)
