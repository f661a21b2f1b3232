"""Builds the tiny random model of each family in family_specs.py with transformers 5 (the layout it saves:
config.json with rope_parameters, chat_template.jinja beside tokenizer_config.json, generation_config.json
with the eos ids) and computes PEFT's reference for dn's family tests: LoRA r4 on every projection with a
closed-form A and B, three AdamW steps on fixed examples; step losses, the step-1 LoRA gradients and logits
after the last step.

Writes, per family, tests/fixtures/families/<family>/model/ (the model directory) and reference.json +
grads.safetensors beside it; for a mixture-of-experts family also fused.safetensors, its weights with the
experts fused as transformers 5 holds them in memory (the model directory holds them one by one). Run: scripts/reference/run.sh families (creates the virtualenv)."""

import json
import math
import pathlib
import sys
import zlib

import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import save_file
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
import transformers
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from family_specs import (  # noqa: E402
    ADDED_TOKENS, COMMON, FAMILIES, LEARNING_RATE, LORA_ALPHA, LORA_RANK, SPECIAL_TOKENS, STEPS,
)

ROOT = pathlib.Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fixtures" / "families"
TEMPLATES = pathlib.Path(__file__).parent / "templates"

CORPUS = [
    "You are the support agent of Acme Cloud. Be brief and exact.",
    "My deploy failed with error E42. What does it mean?",
    "E42 means the build image exceeded the 2 GB limit. Remove unused layers and deploy again.",
    "How do I rotate an API key? Open Settings, choose Rotate, then update your clients.",
    "The weather in Paris is 18 degrees and sunny. Call get_weather with the city.",
    "Think step by step. The answer is 4 because 2 + 2 = 4.",
    "Hello! How can I help you today? Tell me a joke. Why did the chicken cross the road?",
    '{"name": "get_weather", "arguments": {"city": "Paris"}} tool_call tool_response',
    "Cutting Knowledge Date: December 2023 Today Date: 26 Jul 2026 system user assistant model",
]


def train_tokenizer():
    """A byte-level BPE (as Llama 3's, Qwen's and SmolLM2's) with every family's special tokens."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 20, trainer)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in ADDED_TOKENS])
    return tok


def randomize(model, family):
    """Weights large enough that windows, soft-caps and rope scaling change the result (transformers'
    init is too small for that); norm weights near 1 (near 0 where the family applies 1 + w)."""
    # Seeded by the family's name alone, so a family added later changes no other family's weights.
    gen = torch.Generator().manual_seed(zlib.crc32(family.encode()))
    offset_norms = family.startswith("gemma")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                base = 0.0 if offset_norms else 1.0
                p.copy_(base + (torch.rand(p.shape, generator=gen) - 0.5) * 0.4)
            elif "embed_tokens" in name:
                p.copy_(torch.randn(p.shape, generator=gen))
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)


def examples(vocab_size):
    """Three examples longer than every window (and than longrope's original context, 8)."""
    gen = torch.Generator().manual_seed(7)
    out = []
    for length, prompt in [(13, 5), (9, 3), (6, 2)]:
        ids = torch.randint(0, vocab_size, (length,), generator=gen).tolist()
        out.append((ids, [0] * prompt + [1] * (length - prompt)))
    return out


# PEFT's target_parameters on the fused experts (transformers 5's `mlp.experts.gate_up_proj [E, 2I, H]` and
# `down_proj [E, H, I]`): a rank-r LoRA per expert, after the block's projections in dn's order.
EXPERT_PARAMETERS = ["mlp.experts.gate_up_proj", "mlp.experts.down_proj"]


def is_moe(family):
    return any(k in FAMILIES[family]["values"] for k in ("num_experts", "num_local_experts"))


def projection_order(family):
    """target_modules. On a mixture-of-experts model, the attention projections only: PEFT (0.21, under
    transformers 5) turns MLP names in target_modules into the experts' target_parameters (gate_proj and up_proj
    into gate_up_proj at twice the rank and alpha), so a dense layer's MLP (Qwen's mlp_only_layers) cannot be
    adapted; the experts are adapted through target_parameters."""
    if is_moe(family):
        return ["q_proj", "k_proj", "v_proj", "o_proj"]
    return ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"] if family == "phi3" else [
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def closed_form(rows, cols, ordinal, a):
    """A: sin(0.7 k + 1.3 ordinal) / sqrt(cols); B: 0.1 cos(0.3 k + 0.9 ordinal); k = row * cols + col."""
    k = torch.arange(rows * cols, dtype=torch.float64)
    if a:
        values = torch.sin(0.7 * k + 1.3 * ordinal) / math.sqrt(cols)
    else:
        values = 0.1 * torch.cos(0.3 * k + 0.9 * ordinal)
    return values.reshape(rows, cols).float()


def router_name(family):
    """The router's module name (and dn's target name for it): gpt-oss's `router`, the others' `gate`."""
    return "router" if family == "gpt_oss" else "gate"


def lora_modules(peft_model, family):
    """(ordinal, name, module) of every LoRA layer, the ordinal counting them in dn's order: by layer, then
    projection order, the router, then the experts' gate_up_proj and down_proj (a ParamWrapper per expert
    parameter)."""
    order = projection_order(family) + [router_name(family)] + [
        "experts." + p.rsplit(".", 1)[1] for p in EXPERT_PARAMETERS]
    found = []
    for name, module in peft_model.named_modules():
        if hasattr(module, "lora_A") and "default" in getattr(module, "lora_A", {}):
            parts = name.split(".")
            layer = int(parts[parts.index("layers") + 1])
            parameter = getattr(module, "parameter_name", None)
            short = f"experts.{parameter}" if parameter and parameter != "weight" else parts[-1]
            found.append(((layer, order.index(short)), name, module))
    return [(ordinal, name, module) for ordinal, (_, name, module) in enumerate(sorted(found, key=lambda f: f[0]))]


def family_tokenizer(spec, tokenizer):
    """The shared tokenizer, with the family's own special tokens (gpt-oss's harmony ones) added after it."""
    extra = spec.get("extra_special", [])
    if not extra:
        return tokenizer
    own = Tokenizer.from_str(tokenizer.to_str())
    own.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in extra])
    return own


def build(family, spec, tokenizer):
    tokenizer = family_tokenizer(spec, tokenizer)
    directory = OUT / family / "model"
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.iterdir():
        old.unlink()
    config_class = getattr(transformers, spec["config"])
    vocab_size = tokenizer.get_vocab_size()
    config = config_class(**{**COMMON, **spec["values"], "vocab_size": vocab_size})
    ids = {t: tokenizer.token_to_id(t) for t in SPECIAL_TOKENS + spec.get("extra_special", [])}
    config.bos_token_id = ids.get(spec["bos"]) if spec["bos"] else None
    config.eos_token_id = [ids[t] for t in spec["generation_eos"]]
    config.pad_token_id = ids["<pad>"]
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    randomize(model, family)
    model.generation_config.eos_token_id = [ids[t] for t in spec["generation_eos"]]
    model.generation_config.bos_token_id = config.bos_token_id
    model.generation_config.pad_token_id = config.pad_token_id
    dtype = getattr(torch, spec["dtype"])
    kwargs = {"max_shard_size": spec["shard"]} if spec["shard"] else {}
    model.to(dtype).save_pretrained(directory, **kwargs)
    if is_moe(family):
        # save_pretrained writes the experts one by one (transformers 4's layout, as hub repos hold them); the
        # model's own state dict holds them fused (`mlp.experts.gate_up_proj [E, 2I, H]`, `down_proj [E, H, I]`).
        fused = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        save_file(fused, str(directory.parent / "fused.safetensors"))
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token=spec["bos"], eos_token=spec["eos"], pad_token="<pad>",
    )
    fast.chat_template = (TEMPLATES / f"{spec['template']}.jinja").read_text()
    fast.save_pretrained(directory)
    # Saved again as the family's own tokenizer class loads it (Qwen2's brings its pre-tokenizer and NFC
    # normalizer), so tokenizer.json holds what transformers tokenizes with, as in a real repo.
    transformers.AutoTokenizer.from_pretrained(directory).save_pretrained(directory)
    return directory


def reference(family, directory, vocab_size, router=False):
    """PEFT's step-1 gradients, three AdamW steps and the logits after them (reference.json,
    grads.safetensors); with `router`, the router's weight targeted too (router_reference.json,
    router_grads.safetensors)."""
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    targets = projection_order(family)
    parameters = EXPERT_PARAMETERS if is_moe(family) else None
    if router:
        parameters = [f"mlp.{router_name(family)}.weight"] + parameters
    stem = "router_" if router else ""
    peft_model = get_peft_model(model, LoraConfig(r=LORA_RANK, lora_alpha=LORA_ALPHA, lora_dropout=0.0,
                                                  target_modules=targets, target_parameters=parameters))
    modules = lora_modules(peft_model, family)
    if parameters:
        print(f"{family}: LoRA layers", [(o, n, tuple(m.lora_A["default"].weight.shape),
                                          tuple(m.lora_B["default"].weight.shape)) for o, n, m in modules])
    with torch.no_grad():
        for ordinal, _, module in modules:
            a, b = module.lora_A["default"].weight, module.lora_B["default"].weight
            a.copy_(closed_form(a.shape[0], a.shape[1], ordinal, True))
            b.copy_(closed_form(b.shape[0], b.shape[1], ordinal, False))
    batch = examples(vocab_size)
    normaliser = sum(sum(m[1:]) for _, m in batch)
    params = [p for p in peft_model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=LEARNING_RATE, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0)

    def loss_fn():
        total = 0.0
        for ids, mask in batch:
            logits = peft_model(input_ids=torch.tensor([ids])).logits[0].float()
            logp = torch.log_softmax(logits[:-1], dim=-1)
            nll = -logp.gather(1, torch.tensor(ids[1:])[:, None])[:, 0]
            total = total + (nll * torch.tensor(mask[1:], dtype=torch.float32)).sum()
        return total / normaliser

    losses, grads = [], {}
    for step in range(STEPS):
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        if step == 0:
            for _, name, module in modules:
                for part in ("lora_A", "lora_B"):
                    grad = getattr(module, part)["default"].weight.grad
                    grads[f"{name}.{part}.weight"] = grad.detach().clone().contiguous()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(loss.item())
    rows, logits = [], []
    with torch.no_grad():
        offset = 0
        for ids, mask in batch:
            out = peft_model(input_ids=torch.tensor([ids])).logits[0].float()
            for r in [t - 1 for t in range(1, len(ids)) if mask[t] == 1][:3]:
                rows.append(offset + r)
                logits.append([round(float(x), 6) for x in out[r]])
            offset += len(ids)
    save_file(grads, str(directory.parent / f"{stem}grads.safetensors"))
    (directory.parent / f"{stem}reference.json").write_text(json.dumps({
        "source": "scripts/reference/family_models.py (transformers %s, peft %s, torch %s)" % (
            transformers.__version__, __import__("peft").__version__, torch.__version__),
        "family": family, "rank": LORA_RANK, "alpha": LORA_ALPHA, "learning_rate": LEARNING_RATE,
        "targets": targets, "target_parameters": parameters,
        "examples": [{"input_ids": ids, "loss_mask": mask} for ids, mask in batch],
        "normaliser": normaliser, "losses": losses, "logit_rows": rows, "logits": logits,
    }, indent=1) + "\n")
    print(f"{family}{' (router targeted)' if router else ''}: losses {', '.join(f'{x:.6f}' for x in losses)}")


def gemma3_multimodal():
    """Gemma 3's multimodal checkpoint around the tiny gemma3 text model (same text weights, a tiny vision
    tower): dn trains its text model, which must be the same model as the text-only directory."""
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, SiglipVisionConfig

    text_dir = OUT / "gemma3" / "model"
    text = AutoModelForCausalLM.from_pretrained(text_dir, dtype=torch.float32)
    vision = SiglipVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                                image_size=28, patch_size=14)
    config = Gemma3Config(text_config=text.config.to_dict(), vision_config=vision.to_dict(), mm_tokens_per_image=4,
                          boi_token_index=1, eoi_token_index=2, image_token_index=3)
    torch.manual_seed(0)
    model = Gemma3ForConditionalGeneration(config)
    model.model.language_model.load_state_dict(text.model.state_dict())
    directory = OUT / "gemma3" / "multimodal"
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.iterdir():
        old.unlink()
    model.to(torch.bfloat16).save_pretrained(directory)
    for name in ["tokenizer.json", "tokenizer_config.json", "chat_template.jinja"]:
        (directory / name).write_bytes((text_dir / name).read_bytes())
    print("gemma3: multimodal checkpoint around the text model")


def main():
    tokenizer = train_tokenizer()
    only = sys.argv[1:]
    for family, spec in FAMILIES.items():
        if only and family not in only:
            continue
        directory = build(family, spec, tokenizer)
        vocab_size = family_tokenizer(spec, tokenizer).get_vocab_size()
        reference(family, directory, vocab_size)
        if is_moe(family):
            reference(family, directory, vocab_size, router=True)
        if family == "gemma3":
            gemma3_multimodal()


if __name__ == "__main__":
    main()
