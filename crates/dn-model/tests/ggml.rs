//! Every ggml type dn reads from GGUF files decodes exactly as gguf-py decodes it (random blocks with
//! sane scales: scripts/reference/ggml_fixture.py).

use dn_model::ggml::GgmlType;

#[test]
fn every_type_decodes_as_gguf_py_decodes_it() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/ggml_types.safetensors");
    let bytes = std::fs::read(path).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut checked = Vec::new();
    for kind in dn_model::ggml::TYPES.iter().filter(|t| t.block > 1) {
        let data = file.tensor(&format!("{}.bytes", kind.name)).unwrap();
        let want: Vec<f32> = file
            .tensor(&format!("{}.values", kind.name))
            .unwrap()
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        assert_eq!(
            kind.size_of(want.len()),
            Some(data.data().len()),
            "{}",
            kind.name
        );
        let mut got = vec![0.0; want.len()];
        kind.dequantize(data.data(), &mut got);
        let differing = got
            .iter()
            .zip(&want)
            .filter(|(a, b)| a.to_bits() != b.to_bits())
            .count();
        assert_eq!(differing, 0, "{}: values differ from gguf-py's", kind.name);
        checked.push(kind.name);
    }
    assert_eq!(
        checked,
        [
            "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q4_K", "Q5_K", "Q6_K"
        ]
    );
    assert_eq!(GgmlType::of(12).map(|t| t.name), Some("Q4_K"));
    assert_eq!(GgmlType::of(10), None, "Q2_K is not read");
}
