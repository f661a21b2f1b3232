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
        // Embeddings, norms and the head are stored as they were (bf16 here, as in the base; the
        // embedding and head kept so in memory); the projections are kept 4-bit.
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
                values(&model.dense(name, DType::F32).unwrap()),
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

/// `base_quantization`: `nf4` quantizes an unquantized base's projections at load as bitsandbytes would
/// (the values bitsandbytes' NF4 gives, rounded to the dtype the weights are stored in, bf16 here);
/// `none` decodes a stored quantization; a stored quantization is not quantized again.
#[test]
fn base_quantization_quantizes_at_load_decodes_or_refuses() {
    use dn_train::BaseQuantization;
    let base = fixture("base");
    let nf4 = BaseModel::load_with(&base, DType::F32, &Device::Cpu, BaseQuantization::Nf4).unwrap();
    // The 14 projections in NF4; the embedding and the (untied) head in their stored bf16.
    assert_eq!(nf4.quantized.len(), 16);
    for name in ["model.embed_tokens.weight", "lm_head.weight"] {
        assert_eq!(nf4.quantized[name].format(), "bf16");
    }
    let want: HashMap<String, Tensor> = candle_core::safetensors::load(
        fixture("nf4").join("dequantized.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    for (name, expected) in &want {
        let got = values(&nf4.dense(name, DType::F32).unwrap());
        let expected: Vec<f32> = values(expected)
            .into_iter()
            .map(|v| half::bf16::from_f32(v).to_f32())
            .collect();
        assert_eq!(got, expected, "{name}");
    }
    let q8 = BaseModel::load_with(&base, DType::F32, &Device::Cpu, BaseQuantization::Q8_0).unwrap();
    assert_eq!(q8.quantized_summary().unwrap().0, "Q8_0+bf16");

    let decoded = BaseModel::load_with(
        &fixture("nf4-dq"),
        DType::F32,
        &Device::Cpu,
        BaseQuantization::None,
    )
    .unwrap();
    assert!(decoded.quantized.is_empty());
    let stored = BaseModel::load(&fixture("nf4-dq"), DType::F32, &Device::Cpu).unwrap();
    for name in stored.quantized.keys() {
        assert_eq!(
            values(decoded.get(name).unwrap()),
            values(&stored.dense(name, DType::F32).unwrap())
        );
    }
    let Err(e) = BaseModel::load_with(
        &fixture("nf4-dq"),
        DType::F32,
        &Device::Cpu,
        BaseQuantization::Nf4,
    ) else {
        panic!("a 4-bit base quantized again");
    };
    assert!(e.to_string().contains("stored in bitsandbytes"), "{e}");
}

/// The memory check counts a quantized base's projections in their stored bytes.
#[test]
fn the_memory_estimate_counts_stored_bytes() {
    use dn_train::{BaseQuantization, LoraConfig, estimate_memory_as};
    let config = BaseModel::read_config(&fixture("nf4-dq")).unwrap();
    let lora = LoraConfig::new(4, 8.0).resolve(&config).unwrap();
    let at = |q| estimate_memory_as(&config, &lora, &Device::Cpu, 64, false, q).weights;
    let (stored, dense) = (at(BaseQuantization::AsStored), at(BaseQuantization::None));
    // 14 projections of 2 x (3 x 64 x 64 + 2 x 32 x 64 + 3 x 64 x 128) weights: 4 bytes dense, 0.5625
    // kept 4-bit.
    let projections = 2 * (2 * 64 * 64 + 2 * 32 * 64 + 3 * 64 * 128) as u64;
    assert_eq!(dense - stored, projections * 4 - projections * 9 / 16);
    assert_eq!(at(BaseQuantization::Nf4), stored);
}
