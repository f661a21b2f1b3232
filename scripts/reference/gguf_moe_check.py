"""Checks dn's GGUF export of a qwen3_moe model (a job's adapter, the router's pair included, merged in):
- the `gguf` package reads llama.cpp's qwen3moe metadata and tensor names and shapes from it;
- transformers (its GGUF loader, which maps ffn_gate_exps/ffn_up_exps back into gate_up_proj) computes
  the logits of dn's merged model directory from it;
- llama.cpp (llama-cpp-python), when its virtualenv is there, computes the same logits.

Usage: gguf_moe_check.py base FUSED.safetensors FIXTURE_MODEL_DIR OUT_DIR   (writes the all-sparse base)
       gguf_moe_check.py check MODEL.gguf MERGED_DIR OUT.json   (transformers; the merged logits beside OUT)
       gguf_moe_check.py llama MODEL.gguf OUT.json              (llama.cpp, added to OUT.json)
Run: scripts/reference/run.sh gguf-check-moe."""

import json
import pathlib
import shutil
import sys

import numpy as np

IDS = [[5, 17, 42, 99, 120, 7, 256, 3, 64, 11, 200, 31], [250, 4, 9, 77, 18, 140]]


def make_base(fused, fixture_dir, out):
    """The tiny qwen3_moe model as llama.cpp's qwen3moe computes it: the dense middle layer dropped, the
    top-k renormalised (the same model dn's tests/export.rs builds)."""
    from safetensors.torch import load_file, save_file

    out.mkdir(parents=True, exist_ok=True)
    for name in ["tokenizer.json", "tokenizer_config.json", "generation_config.json", "chat_template.jinja"]:
        shutil.copy(fixture_dir / name, out / name)
    config = json.loads((fixture_dir / "config.json").read_text())
    config.update(num_hidden_layers=2, mlp_only_layers=[], norm_topk_prob=True, dtype="float32")
    (out / "config.json").write_text(json.dumps(config, indent=2))
    tensors = load_file(str(fused))
    kept = {k.replace("model.layers.2.", "model.layers.1."): v.float().contiguous()
            for k, v in tensors.items() if not k.startswith("model.layers.1.")}
    save_file(kept, str(out / "model.safetensors"), metadata={"format": "pt"})


def relative(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


def finish(result, out):
    worst = max(v for c in result["logits"] for k, v in c.items() if k != "tokens")
    result["passed"] = worst < 1e-4
    pathlib.Path(out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    sys.exit(0 if result["passed"] else 1)


def check(gguf_path, merged_dir, out):
    import torch
    from gguf import GGUFReader
    from transformers import AutoConfig, AutoModelForCausalLM

    reader = GGUFReader(str(gguf_path))

    def scalar(name):
        field = reader.fields[name]
        value = field.parts[field.data[0]]
        return bytes(value).decode() if field.types[0].name == "STRING" else value.tolist()[0]

    result = {"source": "scripts/reference/gguf_moe_check.py", "metadata": {
        k: scalar(k) for k in ["general.architecture", "qwen3moe.block_count", "qwen3moe.expert_count",
                               "qwen3moe.expert_used_count", "qwen3moe.expert_feed_forward_length"]}}
    result["tensors"] = {t.name: [int(d) for d in t.shape] for t in reader.tensors if t.name.startswith("blk.1.")}

    merged = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32)
    merged.eval()
    # transformers' GGUF config mapping has no key for the experts' width (moe_intermediate_size): the
    # merged directory's config gives it, the tensors come from the GGUF.
    config = AutoConfig.from_pretrained(merged_dir)
    from_gguf = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, config=config,
                                                     dtype=torch.float32)
    from_gguf.eval()
    result["logits"], wanted = [], {}
    with torch.no_grad():
        for i, ids in enumerate(IDS):
            want = merged(input_ids=torch.tensor([ids])).logits[0].numpy()
            got = from_gguf(input_ids=torch.tensor([ids])).logits[0].numpy()
            wanted[f"ids{i}"] = want
            result["logits"].append({"tokens": len(ids), "transformers_gguf_vs_merged": relative(got, want)})
    np.savez(pathlib.Path(out).with_suffix(".npz"), **wanted)
    finish(result, out)


def llama(gguf_path, out):
    from llama_cpp import Llama

    result = json.loads(pathlib.Path(out).read_text())
    wanted = np.load(pathlib.Path(out).with_suffix(".npz"))
    for i, (ids, entry) in enumerate(zip(IDS, result["logits"])):
        # An f32 KV cache (llama.cpp keeps it in f16 by default: 1e-3 of rounding on these logits).
        llm = Llama(model_path=str(gguf_path), logits_all=True, n_ctx=64, type_k=0, type_v=0, verbose=False)
        llm.eval(ids)
        scores = np.array(llm.scores[: len(ids)], dtype=np.float32)
        entry["llama_cpp_vs_merged"] = relative(scores, wanted[f"ids{i}"])
    pathlib.Path(out).with_suffix(".npz").unlink()
    finish(result, out)


if sys.argv[1] == "check":
    check(pathlib.Path(sys.argv[2]), sys.argv[3], sys.argv[4])
elif sys.argv[1] == "llama":
    llama(pathlib.Path(sys.argv[2]), sys.argv[3])
elif sys.argv[1] == "base":
    make_base(pathlib.Path(sys.argv[2]), pathlib.Path(sys.argv[3]), pathlib.Path(sys.argv[4]))
else:
    sys.exit(__doc__)
