"""The side-by-side peer of gpu_check's throughput part, run on the GPU machine: PyTorch + transformers +
PEFT training a Llama-3.1-8B-shaped model (hidden 4096, 32/8 heads, intermediate 14336, vocabulary
128256) with a few random layers: bf16 weights, SDPA attention, gradient checkpointing (dn's recompute),
LoRA r16 / alpha 32 on all seven projections (adapter in f32, PEFT's default), AdamW, clip 1.0, batches of
8 x 2048 random tokens with the second half supervised. Median step time (first step excluded) and peak
memory per layer count, extrapolated to 32 layers as gpu_check does. Writes one JSON.
Usage: peer.py [--layers 2,4] [--seq 2048] [--batch 8] [--steps 4] [--peak-tflops 989] --out FILE"""

import argparse
import json
import statistics
import time

import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def one(layers, args):
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=4096, intermediate_size=14336, num_hidden_layers=layers,
                         num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
                         rope_theta=500000.0, max_position_embeddings=8192, tie_word_embeddings=False,
                         attn_implementation="sdpa", use_cache=False)
    torch.set_default_dtype(torch.bfloat16)
    with torch.device("cuda"):
        model = LlamaForCausalLM(config)
    torch.set_default_dtype(torch.float32)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=TARGETS,
                                             task_type="CAUSAL_LM"))
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0)
    gen = torch.Generator(device="cuda").manual_seed(5)
    ids = torch.randint(0, config.vocab_size, (args.batch, args.seq), device="cuda", generator=gen)
    labels = ids.clone()
    labels[:, : args.seq // 2] = -100
    times, losses = [], []
    for _ in range(args.steps):
        torch.cuda.synchronize()
        started = time.perf_counter()
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    result = {
        "layers": layers,
        "tokens_per_step": args.batch * args.seq,
        "step_seconds": times,
        "median_step_seconds": statistics.median(times[1:]),
        "peak_bytes": torch.cuda.max_memory_reserved() - before,
        "peak_allocated_bytes": torch.cuda.max_memory_allocated() - before,
        "losses": losses,
    }
    del model, opt, params, loss
    return result


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--layers", default="2,4")
    parser.add_argument("--seq", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--peak-tflops", type=float, default=989.0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    runs = [one(int(n), args) for n in args.layers.split(",")]
    first, last = runs[0], runs[-1]

    def extrapolate(key):
        per_layer = (last[key] - first[key]) / (last["layers"] - first["layers"])
        return first[key] - first["layers"] * per_layer + 32 * per_layer

    step = extrapolate("median_step_seconds")
    tokens = args.batch * args.seq
    import transformers, peft
    report = {
        "ok": step > 0,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "peft": peft.__version__, "cuda": torch.version.cuda},
        "gpu": torch.cuda.get_device_name(0),
        "runs": runs,
        "extrapolated_32_layers": {
            "step_seconds": step,
            "tokens_per_second": tokens / step,
            "peak_gib": extrapolate("peak_bytes") / 2**30,
        },
    }
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
