"""The peer of the mixture-of-experts benchmark: transformers 5 + PEFT on CPU, LoRA r16 / alpha 32 on the
attention projections (target_modules) and on every expert's gate_up_proj and down_proj (PEFT's
target_parameters), the training loop TRL's SFTTrainer runs (batches of padded examples, loss on the
loss_mask only, AdamW betas 0.9/0.95, eps 1e-8, clip 1.0, constant LR), one epoch on the same pre-tokenized
examples dn trains on. Writes one JSON result. Usage: moe_peer.py MODEL_DIR EXAMPLES.jsonl BATCH LR OUT.json"""

import json
import pathlib
import sys

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import peer_loop  # noqa: E402

model_dir, examples_file, batch, lr, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
examples = [json.loads(l) for l in open(examples_file) if l.strip()]
model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
model = get_peft_model(model, LoraConfig(
    r=16, lora_alpha=32, lora_dropout=0.0, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
    target_parameters=["mlp.experts.gate_up_proj", "mlp.experts.down_proj"]))
result = {**peer_loop.train(model, examples, batch, lr),
          "system": f"transformers {__import__('transformers').__version__} + PEFT {__import__('peft').__version__} (f32)",
}
peer_loop.write(result, out)
