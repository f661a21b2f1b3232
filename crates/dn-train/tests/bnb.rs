//! Bases quantized by bitsandbytes (scripts/reference/bnb_models.py: a tiny Llama through transformers'
//! `load_in_4bit`, NF4 and FP4, with and without double quantization): every quantized weight decodes to
//! exactly the values bitsandbytes' own `dequantize_4bit` gives, the rest of the checkpoint loads as
//! stored, and quantizing the unquantized weights gives the bytes bitsandbytes stored.

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use dn_train::BaseModel;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/bnb")
        .join(name)
}

fn values(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

#[test]
fn quantized_weights_decode_to_bitsandbytes_values_exactly() {
    let base = BaseModel::load(&fixture("base"), DType::F32, &Device::Cpu).unwrap();
    for (variant, quantization) in [
        ("nf4-dq", "bitsandbytes nf4 (double quant)"),
        ("nf4", "bitsandbytes nf4"),
        ("fp4-dq", "bitsandbytes fp4 (double quant)"),
    ] {
        let model = BaseModel::load(&fixture(variant), DType::F32, &Device::Cpu).unwrap();
        assert_eq!(
            model.config.quantization.map(|q| q.to_string()).as_deref(),
            Some(quantization)
        );
        let want: HashMap<String, Tensor> = candle_core::safetensors::load(
            fixture(variant).join("dequantized.safetensors"),
            &Device::Cpu,
        )
        .unwrap();
        assert_eq!(want.len(), 14, "{variant}: 7 linears in each of 2 layers");
        for (name, expected) in &want {
            let got = model.dense(name, DType::F32).unwrap();
            assert_eq!(got.dims(), expected.dims(), "{variant}: {name}");
            let (got, expected) = (values(&got), values(expected));
            let differing = got
                .iter()
                .zip(&expected)
                .filter(|(a, b)| a.to_bits() != b.to_bits() && **a != **b)
                .count();
            assert_eq!(
                differing, 0,
                "{variant}: {name} differs from bitsandbytes' decoding"
            );
        }
        // Embeddings, norms and the head are stored as they were (bf16 here, as in the base); the
        // projections are kept 4-bit.
        assert_eq!(
            model.tensors.len() + model.quantized.len(),
            base.tensors.len(),
            "{variant}"
        );
        for name in [
            "model.embed_tokens.weight",
            "lm_head.weight",
            "model.norm.weight",
        ] {
            assert_eq!(
                values(model.get(name).unwrap()),
                values(base.get(name).unwrap())
            );
        }
    }
}

/// bitsandbytes' 4-bit quantization, reproduced: the unquantized base quantized by dn gives the bytes and
/// block scales the `nf4` checkpoint stores (quantized from the same f32 values, without double
/// quantization).
#[test]
fn quantizing_the_base_gives_the_bytes_bitsandbytes_stored() {
    let base = BaseModel::load(&fixture("base"), DType::F32, &Device::Cpu).unwrap();
    // SAFETY: a test fixture, not modified while mapped.
    let stored = unsafe {
        candle_core::safetensors::MmapedSafetensors::new(fixture("nf4").join("model.safetensors"))
    }
    .unwrap();
    let mut compared = 0;
    for (name, view) in stored.tensors() {
        let Some(weight) = name.strip_suffix(".absmax") else {
            continue;
        };
        let original = values(base.get(weight).unwrap());
        let (packed, absmax) = dn_model::bnb4::quantize(&original, dn_model::bnb4::Code::Nf4, 64);
        let want_absmax: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        assert_eq!(absmax, want_absmax, "{weight}: block scales");
        assert_eq!(
            packed.as_slice(),
            stored.get(weight).unwrap().data(),
            "{weight}: packed codes"
        );
        compared += 1;
    }
    assert_eq!(compared, 14);
}
