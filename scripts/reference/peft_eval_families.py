"""Checks a dn job's final adapter on a family's tiny model with PEFT: transformers 5 loads the model
directory (float32, eager attention), PeftModel.from_pretrained applies the adapter, and the mean NLL over
the supervised tokens of the eval examples (token ids and masks as dn prepared them, from
`dn data preview --json`) is compared with the job's eval/loss (a bitsandbytes base: PEFT over the model the
checkpoint stores in f32, bitsandbytes' own lower-precision CPU kernel reported beside). Run:
scripts/reference/run.sh peft-eval-families"""

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



def decoded_base():
    """A bitsandbytes checkpoint as the model it stores, in f32: its config without the quantization, the
    quantized weights as bitsandbytes decoded them when quantizing (dequantized.safetensors, written by
    bnb_models.py), the rest as saved."""
    from safetensors.torch import load_file
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_dir)
    del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager").float()
    stored = load_file(str(model_dir / "model.safetensors"))
    state = {k: v.float() for k, v in stored.items() if k in model.state_dict()}
    state.update(load_file(str(model_dir / "dequantized.safetensors")))
    model.load_state_dict(state, strict=False)
    if config.tie_word_embeddings:
        model.tie_weights()
    return model


base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="eager")
model = PeftModel.from_pretrained(base, adapter)
model.eval()

peft_loss, tokens, base_loss = adapter_and_base_losses(model, examples)
dn_loss = job["metrics"]["eval/loss"]
note = ""
if (model_dir / "dequantized.safetensors").exists():
    # bitsandbytes' CPU 4-bit matmul computes at about bf16 precision (one Linear4bit against F.linear on its
    # own dequantize_4bit: 3e-3 relative). The check is on the model the checkpoint stores, in f32 (what dn
    # computes); bitsandbytes' own kernel is reported beside.
    kernel = abs(peft_loss - dn_loss) / abs(peft_loss)
    note = f"; PEFT + bitsandbytes' 4-bit kernel {peft_loss:.6f} ({kernel:.2e})"
    model = PeftModel.from_pretrained(decoded_base(), adapter)
    model.eval()
    peft_loss, tokens, base_loss = adapter_and_base_losses(model, examples)
rel = abs(peft_loss - dn_loss) / abs(peft_loss)
ok = rel < 1e-3 and abs(base_loss - peft_loss) > 1e-3
print(f"{family}: {len(examples)} eval examples, {tokens} supervised tokens; base {base_loss:.6f}, "
      f"PEFT with dn's adapter {peft_loss:.6f}, dn eval/loss {dn_loss:.6f}, relative difference {rel:.2e} "
      f"({'ok' if ok else 'FAILED'}: tolerance 1e-3){note}")
sys.exit(0 if ok else 1)
