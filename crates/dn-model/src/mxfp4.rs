//! MXFP4 (OCP Microscaling, FP4 E2M1 elements) as gpt-oss checkpoints store their experts: per row of a
//! `[.., rows, groups, 16]` byte tensor (`*_blocks`), each byte two 4-bit codes (the low nibble first),
//! each group of 32 values sharing one power-of-two scale byte (`*_scales [.., rows, groups]`, biased by
//! 127). Decoded exactly as transformers' `convert_moe_packed_tensors` does (before its final transpose):
//! `FP4[code] * 2^(scale - 127)`, which f32 holds exactly.

/// The 16 E2M1 values by code (bit 3 the sign).
pub const FP4_VALUES: [f32; 16] = [
    0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0,
];

/// Bytes per group of 32 values.
pub const GROUP_BYTES: usize = 16;

/// Decodes `blocks` (`scales.len()` groups of [`GROUP_BYTES`] bytes) into `scales.len() * 32` values, in
/// order: the rows of `[.., rows, groups * 32]`. A block count that does not match the scales is an error
/// naming both.
pub fn dequantize(blocks: &[u8], scales: &[u8]) -> Result<Vec<f32>, String> {
    if blocks.len() != scales.len() * GROUP_BYTES {
        return Err(format!(
            "MXFP4: {} block bytes for {} scales (expected {} bytes: 16 per scale)",
            blocks.len(),
            scales.len(),
            scales.len() * GROUP_BYTES
        ));
    }
    let mut out = vec![0.0f32; scales.len() * 2 * GROUP_BYTES];
    dequantize_into(blocks, scales, &mut out);
    Ok(out)
}

/// [`dequantize`] into `out` (`scales.len() * 32` values; `blocks` 16 bytes a scale).
pub fn dequantize_into(blocks: &[u8], scales: &[u8], out: &mut [f32]) {
    for ((group, &scale), values) in blocks
        .chunks(GROUP_BYTES)
        .zip(scales)
        .zip(out.chunks_mut(2 * GROUP_BYTES))
    {
        let factor = power_of_two(i32::from(scale) - 127);
        for (&byte, pair) in group.iter().zip(values.chunks_mut(2)) {
            pair[0] = FP4_VALUES[usize::from(byte & 0x0f)] * factor;
            pair[1] = FP4_VALUES[usize::from(byte >> 4)] * factor;
        }
    }
}

/// `2^exponent` in f32 for -127..=128 (subnormal below -126, infinite at 128, as `ldexp` gives).
fn power_of_two(exponent: i32) -> f32 {
    (exponent as f64).exp2() as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_scales() {
        // Scale 128 = 2^1: codes 1 (0.5) and 15 (-6) in one byte, low nibble first.
        let mut blocks = vec![0u8; 16];
        blocks[0] = 0xF1;
        let values = dequantize(&blocks, &[128]).unwrap();
        assert_eq!(values.len(), 32);
        assert_eq!(&values[..2], &[1.0, -12.0]);
        assert!(values[2..].iter().all(|v| *v == 0.0));
        assert!(
            dequantize(&blocks, &[1, 2])
                .unwrap_err()
                .contains("16 per scale")
        );
    }
}
