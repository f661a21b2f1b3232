"""Checks a dn job's final adapter on a family's tiny model with PEFT: transformers 5 loads the model
directory (float32, eager attention), PeftModel.from_pretrained applies the adapter, and the mean NLL over
the supervised tokens of the eval examples (token ids and masks as dn prepared them, from
`dn data preview --json`) is compared with the job's eval/loss. Run: scripts/reference/run.sh peft-eval-families"""

import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).parent))

import torch
from peft import PeftModel
from peft_check import adapter_and_base_losses
from transformers import AutoModelForCausalLM

family, model_dir, job_file, examples_file = sys.argv[1], *(pathlib.Path(a) for a in sys.argv[2:5])
job = json.loads(job_file.read_text())
# Local storage reports the adapter's key, relative to the storage directory (the last argument).
adapter = str(pathlib.Path(sys.argv[-1]) / job["artifacts"]["adapter"])
examples = [json.loads(line) for line in examples_file.read_text().splitlines() if line.strip()]

base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="eager")
model = PeftModel.from_pretrained(base, adapter)
model.eval()

peft_loss, tokens, base_loss = adapter_and_base_losses(model, examples)
dn_loss = job["metrics"]["eval/loss"]
rel = abs(peft_loss - dn_loss) / abs(peft_loss)
ok = rel < 1e-3 and abs(base_loss - peft_loss) > 1e-3
print(f"{family}: {len(examples)} eval examples, {tokens} supervised tokens; base {base_loss:.6f}, "
      f"PEFT with dn's adapter {peft_loss:.6f}, dn eval/loss {dn_loss:.6f}, relative difference {rel:.2e} "
      f"({'ok' if ok else 'FAILED'}: tolerance 1e-3)")
sys.exit(0 if ok else 1)
