//! MXFP4 decoding against transformers' (scripts/reference/mxfp4_fixture.py packs a tensor per the OCP
//! Microscaling spec, with zero groups, negative zeros, both FP4 extremes, tiny and large scales, and
//! keeps transformers' decoding of it): the very same values, bit for bit.

use dn_model::mxfp4::dequantize;

fn fixture() -> std::collections::HashMap<String, (Vec<usize>, Vec<u8>)> {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mxfp4.safetensors");
    let bytes = std::fs::read(path).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    file.tensors()
        .into_iter()
        .map(|(name, view)| (name, (view.shape().to_vec(), view.data().to_vec())))
        .collect()
}

#[test]
fn decodes_as_transformers_does() {
    let tensors = fixture();
    let (shape, blocks) = &tensors["blocks"];
    let (_, scales) = &tensors["scales"];
    let (want_shape, want) = &tensors["dequantized"];
    let (experts, rows, groups) = (shape[0], shape[1], shape[2]);
    let width = groups * 32;
    assert_eq!(want_shape, &vec![experts, width, rows]);
    let got = dequantize(blocks, scales).unwrap();
    assert_eq!(got.len(), experts * rows * width);
    let want: Vec<f32> = want
        .chunks(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    // dn decodes `[E, rows, width]`; transformers holds the transpose.
    let mut mismatches = 0;
    for e in 0..experts {
        for r in 0..rows {
            for c in 0..width {
                let ours = got[(e * rows + r) * width + c];
                let theirs = want[(e * width + c) * rows + r];
                if ours.to_bits() != theirs.to_bits() {
                    mismatches += 1;
                }
            }
        }
    }
    assert_eq!(mismatches, 0, "values differ from transformers' decoding");
    assert!(got.iter().any(|v| v.to_bits() == (-0.0f32).to_bits()));
    assert!(got.iter().any(|v| v.abs() > 1e12) && got.iter().any(|v| *v != 0.0 && v.abs() < 1e-15));
}
