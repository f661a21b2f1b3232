"""The peer of the training benchmark: PyTorch + transformers + PEFT + TRL's SFTTrainer on CPU, training
SmolLM2-135M-Instruct (dequantized GGUF, float32) with LoRA r16 / alpha 32 on all seven projections on the
same pre-tokenized examples dn trains on (loss on their loss_mask only, as TRL's completion_only_loss), one
epoch, constant LR, AdamW betas 0.9/0.95, eps 1e-8, clip 1.0. Writes one JSON result.
Usage: peer_sft.py GGUF EXAMPLES.jsonl BATCH LR OUT.json"""

import json
import resource
import sys
import tempfile
import time

import torch
from datasets import Dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
from trl import SFTConfig, SFTTrainer

gguf, examples_file, batch, lr, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
directory, name = gguf.rsplit("/", 1)
examples = [json.loads(l) for l in open(examples_file) if l.strip()]
tokens = sum(len(e["input_ids"]) for e in examples)
supervised = sum(sum(e["loss_mask"][1:]) for e in examples)
data = Dataset.from_list([{"input_ids": e["input_ids"], "completion_mask": e["loss_mask"]} for e in examples])

tok = AutoTokenizer.from_pretrained(directory, gguf_file=name)
model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=name, dtype=torch.float32)


class StepTimes(TrainerCallback):
    def __init__(self):
        self.times, self.losses, self.started = [], [], None

    def on_step_begin(self, args, state, control, **kw):
        self.started = time.perf_counter()

    def on_step_end(self, args, state, control, **kw):
        self.times.append(time.perf_counter() - self.started)

    def on_log(self, args, state, control, logs=None, **kw):
        if logs and "loss" in logs:
            self.losses.append(logs["loss"])


times = StepTimes()
with tempfile.TemporaryDirectory() as tmp:
    config = SFTConfig(
        output_dir=tmp, per_device_train_batch_size=batch, gradient_accumulation_steps=1, num_train_epochs=1,
        learning_rate=lr, lr_scheduler_type="constant", warmup_steps=0, adam_beta1=0.9, adam_beta2=0.95,
        adam_epsilon=1e-8, weight_decay=0.0, max_grad_norm=1.0, logging_steps=1, save_strategy="no",
        report_to=[], completion_only_loss=True, max_length=None, use_cpu=True, seed=0,
        dataloader_num_workers=0, disable_tqdm=True,
    )
    peft_config = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, task_type="CAUSAL_LM",
                             target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    trainer = SFTTrainer(model=model, args=config, train_dataset=data, processing_class=tok,
                         peft_config=peft_config, callbacks=[times])
    trainer.train()

seconds = sum(times.times)
result = {
    "system": f"torch {torch.__version__} + PEFT + TRL SFTTrainer ({torch.get_num_threads()} threads)",
    "steps": len(times.times), "examples": len(examples), "tokens": tokens, "supervised_tokens": supervised,
    "seconds": seconds, "step_seconds": times.times, "last_loss": times.losses[-1] if times.losses else None,
    "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
}
json.dump(result, open(out, "w"))
print(json.dumps(result))
