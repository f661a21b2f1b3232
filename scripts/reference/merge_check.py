"""Checks `dn model merge` against PEFT: the merged directory dn wrote (SmolLM2 from the test model's GGUF
with tests/fixtures/generate/smollm2-adapter) loads in transformers, and its logits on a prompt equal the
base with the PEFT adapter (PeftModel) within 1e-4 relative. Writes tests/fixtures/generate/merge_check.json.
Run: scripts/reference/run.sh merge-check (builds nothing: it runs target/debug/dn)."""

import json
import pathlib
import sys

import torch
import transformers
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

gguf, merged, adapter, out = (pathlib.Path(p) for p in sys.argv[1:5])
tokenizer = AutoTokenizer.from_pretrained(merged)
ids = tokenizer("The capital of France is Paris, and the capital of Italy is", return_tensors="pt")["input_ids"]
with torch.no_grad():
    dn_model = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32).eval()
    got = dn_model(input_ids=ids).logits[0].float()
    base = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    peft = PeftModel.from_pretrained(base, adapter).eval()
    want = peft(input_ids=ids).logits[0].float()
relative = ((got - want).abs().max() / want.abs().max()).item()
result = {
    "source": "scripts/reference/merge_check.py (transformers %s, peft %s, torch %s)" % (
        transformers.__version__, __import__("peft").__version__, torch.__version__),
    "tokens": ids.shape[1], "max_relative_error": relative, "passed": relative < 1e-4,
    "argmax_equal": bool((got.argmax(-1) == want.argmax(-1)).all()),
}
out.write_text(json.dumps(result, indent=1) + "\n")
print(result)
sys.exit(0 if result["passed"] else 1)
