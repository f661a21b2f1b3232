"""An MXFP4 expert tensor as gpt-oss checkpoints hold it, packed here per the OCP Microscaling spec (FP4
E2M1 elements, one shared power-of-two scale per 32 values: 2^(floor(log2(amax)) - 2), elements rounded to
the nearest E2M1 value, ties to even), and transformers' own decoding of it (`convert_moe_packed_tensors`,
the function its gpt-oss loader calls). dn's decoder must give the same values exactly.

Writes crates/dn-model/tests/fixtures/mxfp4.safetensors: `blocks` [E, R, G, 16] u8, `scales` [E, R, G] u8
and `dequantized` [E, G * 32, R] f32 (transformers' result: the rows transposed, as its experts are held).
Run: scripts/reference/run.sh mxfp4-fixture"""

import pathlib
import sys

import torch
from safetensors.torch import save_file
from transformers.integrations.mxfp4 import FP4_VALUES, convert_moe_packed_tensors

ROOT = pathlib.Path(__file__).resolve().parents[2]
OUT = ROOT / "crates" / "dn-model" / "tests" / "fixtures" / "mxfp4.safetensors"
E, R, G = 2, 6, 3  # experts, rows, groups of 32 values per row


def pack(values):
    """values [..., G, 32] float -> (blocks [..., G, 16] u8, scales [..., G] u8)."""
    amax = values.abs().amax(dim=-1)
    exponent = torch.where(amax > 0, torch.floor(torch.log2(amax)) - 2, torch.zeros_like(amax))
    exponent = exponent.clamp(-127, 127)
    scaled = values / torch.exp2(exponent)[..., None]
    grid = torch.tensor(FP4_VALUES[:8])  # the magnitudes 0 .. 6
    distance = (scaled.abs()[..., None] - grid).abs()
    code = distance.argmin(dim=-1)
    # Ties to the even code (the lower mantissa bit 0), as round-to-nearest-even does.
    best = distance.min(dim=-1, keepdim=True).values
    tied = (distance == best).sum(dim=-1) > 1
    code = torch.where(tied & (code % 2 == 1), code + 1, code)
    code = code.clamp(max=7) + torch.where(scaled < 0, 8, 0) + torch.where((scaled == 0) & torch.signbit(scaled), 8, 0)
    code = code.to(torch.uint8)
    blocks = code[..., 0::2] | (code[..., 1::2] << 4)
    return blocks, (exponent + 127).to(torch.uint8)


def main():
    gen = torch.Generator().manual_seed(3)
    values = torch.randn(E, R, G, 32, generator=gen) * torch.exp2(torch.randint(-12, 4, (E, R, G, 1), generator=gen).float())
    values[0, 0, 0] = 0.0  # an all-zero group (scale 2^-127 after the clamp: exponent 0 -> byte 127)
    values[0, 0, 1, :4] = torch.tensor([-0.0, 6.0, -6.0, 0.25])  # negative zero, both extremes
    values[1, 2, 2] *= 2.0 ** -60  # a tiny scale
    values[1, 3, 0] *= 2.0 ** 40  # a large one
    blocks, scales = pack(values)
    for dtype in (torch.float32, torch.bfloat16):
        out = convert_moe_packed_tensors(blocks, scales, dtype=dtype)
        assert out.shape == (E, G * 32, R), out.shape
        if dtype == torch.float32:
            reference = out
        else:
            assert torch.equal(out.float(), reference), "bf16 and f32 decodings differ"
    OUT.parent.mkdir(parents=True, exist_ok=True)
    save_file({"blocks": blocks.contiguous(), "scales": scales.contiguous(), "dequantized": reference.contiguous()},
              str(OUT))
    print(f"mxfp4: {E}x{R}x{G} groups, max |value| {reference.abs().max():.3g}, written to {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    sys.exit(main())
