"""Greedy generation references for dn's generation tests: transformers 5 + PEFT `generate` (greedy, no
end-of-sequence stop, 32 new tokens from given prompt ids).

- Each family's tiny random model (tests/fixtures/families/<family>/model) with the closed-form LoRA of
  family_models.py (r4, alpha 8, every projection): tests/fixtures/families/<family>/generate.json.
- SmolLM2-135M-Instruct (the test model's GGUF, dequantized by transformers) with a LoRA adapter on q, v and
  o (r4, alpha 8, closed-form values) saved as PEFT saves it: tests/fixtures/generate/smollm2-adapter/ and
  tests/fixtures/generate/smollm2.json.

Run: scripts/reference/run.sh generate-parity (creates the virtualenv, fetches the test model)."""

import json
import pathlib
import sys

import torch
import transformers
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from family_models import EXPERT_PARAMETERS, closed_form, is_moe, lora_modules, projection_order  # noqa: E402
from family_specs import FAMILIES, LORA_ALPHA, LORA_RANK  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]
NEW_TOKENS = 32
SOURCE = "scripts/reference/generate_parity.py (transformers %s, peft %s, torch %s)" % (
    transformers.__version__, __import__("peft").__version__, torch.__version__)


def set_closed_form(peft_model, order):
    """A and B of every LoRA layer from closed_form, ordinal = layer * len(order) + index in order."""
    found = []
    for name, module in peft_model.named_modules():
        if hasattr(module, "lora_A") and "default" in getattr(module, "lora_A", {}):
            parts = name.split(".")
            layer = int(parts[parts.index("layers") + 1])
            found.append((layer * len(order) + order.index(parts[-1]), module))
    with torch.no_grad():
        for ordinal, module in found:
            a, b = module.lora_A["default"].weight, module.lora_B["default"].weight
            a.copy_(closed_form(a.shape[0], a.shape[1], ordinal, True))
            b.copy_(closed_form(b.shape[0], b.shape[1], ordinal, False))


def greedy(model, prompt):
    out = model.generate(
        input_ids=torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
        max_new_tokens=NEW_TOKENS, min_new_tokens=0, do_sample=False, eos_token_id=None,
        pad_token_id=0, num_beams=1, temperature=None, top_p=None, top_k=None,
    )
    return out[0, len(prompt):].tolist()


def family(name):
    directory = ROOT / "tests" / "fixtures" / "families" / name
    model = AutoModelForCausalLM.from_pretrained(directory / "model", dtype=torch.float32,
                                                 attn_implementation="eager")
    model.eval()
    model.generation_config.eos_token_id = None
    order = projection_order(name)
    parameters = EXPERT_PARAMETERS if is_moe(name) else None
    peft_model = get_peft_model(model, LoraConfig(r=LORA_RANK, lora_alpha=LORA_ALPHA, lora_dropout=0.0,
                                                  target_modules=order, target_parameters=parameters))
    modules = lora_modules(peft_model, name)
    assert modules
    with torch.no_grad():
        for ordinal, _, module in modules:
            a, b = module.lora_A["default"].weight, module.lora_B["default"].weight
            a.copy_(closed_form(a.shape[0], a.shape[1], ordinal, True))
            b.copy_(closed_form(b.shape[0], b.shape[1], ordinal, False))
    examples = json.loads((directory / "reference.json").read_text())["examples"]
    prompts = [examples[0]["input_ids"][:5], examples[1]["input_ids"]]
    tokens = [greedy(peft_model, p) for p in prompts]
    (directory / "generate.json").write_text(json.dumps({
        "source": SOURCE, "family": name, "prompts": prompts, "tokens": tokens}) + "\n")
    print(name, tokens)


def smollm2(gguf):
    out = ROOT / "tests" / "fixtures" / "generate"
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    model.eval()
    model.generation_config.eos_token_id = None
    targets = ["q_proj", "v_proj", "o_proj"]
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=targets))
    order = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    set_closed_form(peft_model, order)
    peft_model.save_pretrained(out / "smollm2-adapter")
    conversation = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]
    chat = tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True)
    chat = chat["input_ids"] if isinstance(chat, dict) or hasattr(chat, "keys") else chat
    prompts = [tokenizer("The capital of France is")["input_ids"], list(chat)]
    tokens = [greedy(peft_model, p) for p in prompts]
    (out / "smollm2.json").write_text(json.dumps({
        "source": SOURCE, "adapter": "smollm2-adapter", "prompts": prompts, "tokens": tokens,
        "texts": [tokenizer.decode(t) for t in tokens]}, indent=1) + "\n")
    print("smollm2", [tokenizer.decode(t) for t in tokens])


if __name__ == "__main__":
    for name in FAMILIES:
        family(name)
    smollm2(pathlib.Path(sys.argv[1]))
