"""Bases quantized by bitsandbytes (0.50, its CPU implementation) through transformers' `load_in_4bit`, as
users download them (`*-bnb-4bit`), and bitsandbytes' own decoding of every quantized weight.

A tiny random Llama whose widths are multiples of 64 (bitsandbytes' blocks run over the flattened weight; its
AVX512 CPU kernel indexes them per row, which agrees only when a row holds whole blocks), saved in bf16,
then quantized three ways:
  nf4-dq   NF4, double quantization (QLoRA's recipe), from bf16
  nf4      NF4 alone, from f32
  fp4-dq   FP4, double quantization, from f16
Writes tests/fixtures/bnb/base/ (the unquantized model), tests/fixtures/bnb/<variant>/ (the checkpoint as
save_pretrained writes it) and tests/fixtures/bnb/<variant>/dequantized.safetensors (bitsandbytes'
dequantize_4bit of each quantized weight, in the dtype it was quantized from, saved as f32).
`bnb_models.py model SRC_DIR OUT_DIR [VARIANT]` quantizes a real model directory the same way (run.sh
peft-eval-bnb-smollm2)."""

import json
import pathlib
import shutil
import sys

import bitsandbytes as bnb
import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, BitsAndBytesConfig, LlamaConfig

ROOT = pathlib.Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fixtures" / "bnb"
TOKENIZER = ROOT / "tests" / "fixtures" / "families" / "llama" / "model"
VARIANTS = {
    "nf4-dq": ("nf4", True, torch.bfloat16),
    "nf4": ("nf4", False, torch.float32),
    "fp4-dq": ("fp4", True, torch.float16),
}


def base():
    directory = OUT / "base"
    if directory.exists():
        shutil.rmtree(directory)
    vocab = json.loads((TOKENIZER / "config.json").read_text())["vocab_size"]
    config = LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         tie_word_embeddings=False, bos_token_id=None, eos_token_id=[2], pad_token_id=19)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    gen = torch.Generator().manual_seed(64)
    with torch.no_grad():
        for name, p in model.named_parameters():
            scale = 0.2 if "norm" in name else (1.0 if "embed" in name else 0.3)
            base_value = 1.0 if "norm" in name else 0.0
            p.copy_(base_value + torch.randn(p.shape, generator=gen) * scale)
    model.to(torch.bfloat16).save_pretrained(directory)
    for name in ["tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json"]:
        shutil.copy(TOKENIZER / name, directory / name)
    return directory


def quantized(base_dir, variant, directory=None):
    quant_type, double, dtype = VARIANTS[variant]
    directory = directory or OUT / variant
    if directory.exists():
        shutil.rmtree(directory)
    config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=quant_type,
                                bnb_4bit_use_double_quant=double, bnb_4bit_compute_dtype=torch.float32)
    model = AutoModelForCausalLM.from_pretrained(base_dir, quantization_config=config, dtype=dtype,
                                                 device_map={"": "cpu"})
    model.save_pretrained(directory)
    for name in ["tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json"]:
        if (base_dir / name).exists():
            shutil.copy(base_dir / name, directory / name)
    decoded = {}
    for name, module in model.named_modules():
        if isinstance(module, bnb.nn.Linear4bit):
            weight = module.weight
            values = bnb.functional.dequantize_4bit(weight.data, weight.quant_state)
            decoded[f"{name}.weight"] = values.float().contiguous()
    save_file(decoded, str(directory / "dequantized.safetensors"))
    print(f"{variant}: {len(decoded)} quantized linears ({quant_type}, double quant {double}, from {dtype})")


def main():
    if sys.argv[1:2] == ["model"]:
        # A real model quantized the same way (not a fixture): bnb_models.py model SRC_DIR OUT_DIR [VARIANT]
        source, out = pathlib.Path(sys.argv[2]), pathlib.Path(sys.argv[3])
        return quantized(source, sys.argv[4] if len(sys.argv) > 4 else "nf4-dq", out)
    only = sys.argv[1:]
    base_dir = base()
    for variant in VARIANTS:
        if not only or variant in only:
            quantized(base_dir, variant)


main()
