"""What the PEFT checks of dn's adapters share: the mean NLL over supervised tokens of examples as dn prepared
them (`dn data preview --json`: token ids and loss masks), with the adapter and with it disabled."""

import torch


def mean_nll(model, examples):
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


def adapter_and_base_losses(peft_model, examples):
    """(loss with the adapter, supervised tokens, loss of the base model)."""
    loss, tokens = mean_nll(peft_model, examples)
    with peft_model.disable_adapter():
        base, _ = mean_nll(peft_model, examples)
    return loss, tokens, base
