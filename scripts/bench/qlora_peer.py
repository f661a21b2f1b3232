"""The peer of the quantized-base benchmark: transformers 5 + bitsandbytes (its CPU 4-bit kernels) + PEFT,
QLoRA as users run it: the base loaded with `load_in_4bit` (NF4, no double quantization, compute in f32),
LoRA r16 / alpha 32 on every projection, the training loop TRL's SFTTrainer runs (padded batches, loss on
the loss_mask only, AdamW betas 0.9/0.95, eps 1e-8, clip 1.0, constant LR), one epoch on the same
pre-tokenized examples dn trains on. Writes one JSON result.
Usage: qlora_peer.py MODEL_DIR EXAMPLES.jsonl BATCH LR OUT.json"""

import json
import pathlib
import sys

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, BitsAndBytesConfig

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import peer_loop  # noqa: E402

model_dir, examples_file, batch, lr, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
examples = [json.loads(l) for l in open(examples_file) if l.strip()]
quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=False,
                                  bnb_4bit_compute_dtype=torch.float32)
model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, quantization_config=quantization,
                                             device_map={"": "cpu"})
model = get_peft_model(model, LoraConfig(
    r=16, lora_alpha=32, lora_dropout=0.0,
    target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]))
result = {**peer_loop.train(model, examples, batch, lr),
          "system": "transformers %s + bitsandbytes %s + PEFT %s (nf4 base, f32 compute)" % (
        __import__("transformers").__version__, __import__("bitsandbytes").__version__,
        __import__("peft").__version__),
}
peer_loop.write(result, out)
