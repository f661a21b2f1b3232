"""The training loop the Python peers run (what TRL's SFTTrainer runs): batches of padded examples, loss on
the loss_mask only, AdamW betas 0.9/0.95, eps 1e-8, clip 1.0, constant LR, one epoch on the same
pre-tokenized examples dn trains on; and the JSON result the benchmark tables read."""

import json
import resource
import time

import torch


def train(model, examples, batch, lr):
    """One epoch of `model` (LoRA already applied) over `examples`; the figures of the run."""
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
    return {
        "steps": len(times), "examples": len(examples), "tokens": tokens, "supervised_tokens": supervised,
        "seconds": sum(times), "step_seconds": times, "last_loss": losses[-1],
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def write(result, out):
    json.dump(result, open(out, "w"))
    print(json.dumps(result))
