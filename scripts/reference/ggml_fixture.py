"""Blocks of every ggml type dn reads from GGUF files, with random codes and scales, and gguf-py's
(0.19, numpy) dequantization of them: dn's decoding must equal it exactly.

Writes crates/dn-model/tests/fixtures/ggml_types.safetensors: `{TYPE}.bytes` (u8) and `{TYPE}.values`
(f32) per type. Run: scripts/reference/run.sh ggml-fixture."""

import pathlib

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import GGML_QUANT_SIZES, quants
from safetensors.numpy import save_file

ROOT = pathlib.Path(__file__).resolve().parents[2]
OUT = ROOT / "crates" / "dn-model" / "tests" / "fixtures" / "ggml_types.safetensors"

# Byte offsets of each type's f16 scale fields (set to sane values; the rest of a block is random).
SCALES = {
    T.Q4_0: [0], T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2], T.Q8_0: [0],
    T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208],
}


def main():
    rng = np.random.default_rng(11)
    tensors = {}
    for kind, offsets in SCALES.items():
        block, size = GGML_QUANT_SIZES[kind]
        blocks = 1024 // block if block == 32 else 4
        data = rng.integers(0, 256, size=(blocks, size), dtype=np.uint8)
        for at in offsets:
            scale = (rng.uniform(0.001, 0.2, size=blocks) * rng.choice([-1, 1], size=blocks)).astype(np.float16)
            data[:, at:at + 2] = scale.view(np.uint8).reshape(blocks, 2)
        values = quants.dequantize(data.reshape(-1), kind).astype(np.float32).reshape(-1)
        assert values.size == blocks * block and np.isfinite(values).all()
        tensors[f"{kind.name}.bytes"] = data.reshape(-1)
        tensors[f"{kind.name}.values"] = values
        print(kind.name, blocks, "blocks", values.size, "values")
    save_file(tensors, str(OUT))


main()
