"""The older layout of the same tiny models, as hub repos hold it: config.json written by transformers 4.57
(top-level rope_theta / rope_scaling / partial_rotary_factor, Gemma 3's rope_local_base_freq) and a
tokenizer_config.json carrying the chat template itself (no chat_template.jinja).

Writes tests/fixtures/families/<family>/legacy/{config.json,tokenizer_config.json}; dn's tests put them
beside the model's weights and tokenizer and expect the very same model. Runs in the transformers 4.57
virtualenv (scripts/reference/venv.sh): scripts/reference/run.sh families."""

import json
import pathlib
import sys

import transformers

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from family_specs import COMMON, FAMILIES  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fixtures" / "families"
TEMPLATES = pathlib.Path(__file__).parent / "templates"


def legacy_values(spec):
    """transformers 5's rope_parameters spelled as 4.57's keyword arguments."""
    values = dict(spec["values"])
    rope = values.pop("rope_parameters")
    if "full_attention" in rope:  # Gemma 3: global rope (with its scaling) and the local layers' base
        full, local = dict(rope["full_attention"]), rope["sliding_attention"]
        values["rope_theta"] = full.pop("rope_theta")
        values["rope_local_base_freq"] = local["rope_theta"]
        if full.get("rope_type", "default") != "default":
            values["rope_scaling"] = full
        return values
    rope = dict(rope)
    values["rope_theta"] = rope.pop("rope_theta")
    if "partial_rotary_factor" in rope:
        values["partial_rotary_factor"] = rope.pop("partial_rotary_factor")
    kind = rope.pop("rope_type", "default")
    if kind != "default":
        # Qwen2.5 and Phi-3 repos spell the type as `type`.
        values["rope_scaling"] = {"type": kind, **rope}
    return values


def main():
    only = sys.argv[1:]
    for family, spec in FAMILIES.items():
        if only and family not in only:
            continue
        current = json.loads((OUT / family / "model" / "config.json").read_text())
        config_class = getattr(transformers, spec["config"])
        config = config_class(**{**COMMON, **legacy_values(spec), "vocab_size": current["vocab_size"],
                                 "bos_token_id": current.get("bos_token_id"),
                                 "eos_token_id": current.get("eos_token_id"),
                                 "pad_token_id": current.get("pad_token_id")})
        directory = OUT / family / "legacy"
        directory.mkdir(parents=True, exist_ok=True)
        config.save_pretrained(directory)
        tokenizer_config = json.loads((OUT / family / "model" / "tokenizer_config.json").read_text())
        tokenizer_config["tokenizer_class"] = "PreTrainedTokenizerFast"
        tokenizer_config.pop("backend", None)
        tokenizer_config["chat_template"] = (TEMPLATES / f"{spec['template']}.jinja").read_text()
        (directory / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2) + "\n")
        print(f"{family}: legacy config.json (transformers {transformers.__version__}), tokenizer_config.json")


main()
