"""The tiny gpt-oss model with its experts stored as gpt-oss checkpoints store them: MXFP4 (`*_blocks`,
`*_scales` of the untransposed rows, packed per the OCP MX spec by mxfp4_fixture.pack) and
`quantization_config: {quant_method: mxfp4}`; and transformers' logits for it, loading it dequantized (as it
does on a machine without its MXFP4 kernels). dn must load it as the same model.

Writes tests/fixtures/families/gpt_oss/mxfp4/ and tests/fixtures/families/gpt_oss/mxfp4_reference.json.
Run: scripts/reference/run.sh gpt-oss-mxfp4"""

import json
import pathlib
import sys

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, Mxfp4Config

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from mxfp4_fixture import pack  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]
FAMILY = ROOT / "tests" / "fixtures" / "families" / "gpt_oss"


def main():
    out = FAMILY / "mxfp4"
    out.mkdir(exist_ok=True)
    tensors = load_file(str(FAMILY / "model" / "model.safetensors"))
    packed = {}
    for name, t in tensors.items():
        if name.endswith("experts.gate_up_proj") or name.endswith("experts.down_proj"):
            rows = t.float().transpose(1, 2).contiguous()  # [E, out, in]
            e, r, width = rows.shape
            blocks, scales = pack(rows.reshape(e, r, width // 32, 32))
            packed[name + "_blocks"] = blocks.contiguous()
            packed[name + "_scales"] = scales.contiguous()
        else:
            packed[name] = t
    save_file(packed, str(out / "model.safetensors"), metadata={"format": "pt"})
    config = json.loads((FAMILY / "model" / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "mxfp4", "modules_to_not_convert": [
        "model.layers.*.self_attn", "model.layers.*.mlp.router", "model.embed_tokens", "lm_head"]}
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    for name in ["generation_config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"]:
        (out / name).write_bytes((FAMILY / "model" / name).read_bytes())
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32, attn_implementation="eager",
                                                 quantization_config=Mxfp4Config(dequantize=True))
    model.eval()
    examples = json.loads((FAMILY / "reference.json").read_text())["examples"]
    ids = examples[0]["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].float()
    (FAMILY / "mxfp4_reference.json").write_text(json.dumps({
        "source": "scripts/reference/gpt_oss_mxfp4.py (transformers %s)" % __import__("transformers").__version__,
        "input_ids": ids, "logits": [[round(float(x), 6) for x in row] for row in logits],
    }) + "\n")
    print(f"gpt_oss mxfp4: {len(packed)} tensors, logits of {len(ids)} rows")


if __name__ == "__main__":
    main()
