//! A tiny random Llama built in memory, for tests that need exact gradients (f64) or speed.

use std::collections::HashMap;
use std::path::PathBuf;

use dn_train::{BaseModel, DType, Device, ModelConfig, TrainExample};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub fn tiny_config(tied: bool) -> ModelConfig {
    let json = serde_json::json!({
        "model_type": "llama", "hidden_size": 16, "intermediate_size": 24, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 40, "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0, "tie_word_embeddings": tied,
        "rope_scaling": {"rope_type": "llama3", "factor": 4.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 2.0, "original_max_position_embeddings": 8}
    });
    ModelConfig::from_json(&json, "tiny").unwrap()
}

pub fn tiny_model(dtype: DType, tied: bool, seed: u64) -> BaseModel {
    let config = tiny_config(tied);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut tensors = HashMap::new();
    let mut add = |name: String, shape: (usize, usize), scale: f64| {
        let values: Vec<f64> = (0..shape.0 * shape.1)
            .map(|_| rng.random_range(-scale..scale))
            .collect();
        let t = candle_core::Tensor::from_vec(values, shape, &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap();
        tensors.insert(name, t);
    };
    let (d, f, v) = (
        config.hidden_size,
        config.intermediate_size,
        config.vocab_size,
    );
    let (hd, h, kv) = (
        config.head_dim,
        config.num_attention_heads,
        config.num_key_value_heads,
    );
    add("model.embed_tokens.weight".into(), (v, d), 1.0);
    if !tied {
        add("lm_head.weight".into(), (v, d), 0.5);
    }
    for i in 0..config.num_hidden_layers {
        let p = format!("model.layers.{i}");
        add(format!("{p}.self_attn.q_proj.weight"), (h * hd, d), 0.4);
        add(format!("{p}.self_attn.k_proj.weight"), (kv * hd, d), 0.4);
        add(format!("{p}.self_attn.v_proj.weight"), (kv * hd, d), 0.4);
        add(format!("{p}.self_attn.o_proj.weight"), (d, h * hd), 0.4);
        add(format!("{p}.mlp.gate_proj.weight"), (f, d), 0.4);
        add(format!("{p}.mlp.up_proj.weight"), (f, d), 0.4);
        add(format!("{p}.mlp.down_proj.weight"), (d, f), 0.4);
    }
    let mut norms = |name: String| {
        let values: Vec<f64> = (0..d).map(|_| 1.0 + rng.random_range(-0.2..0.2)).collect();
        let t = candle_core::Tensor::from_vec(values, d, &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap();
        tensors.insert(name, t);
    };
    for i in 0..config.num_hidden_layers {
        norms(format!("model.layers.{i}.input_layernorm.weight"));
        norms(format!("model.layers.{i}.post_attention_layernorm.weight"));
    }
    norms("model.norm.weight".into());
    BaseModel {
        config,
        tensors,
        source: PathBuf::from("tiny"),
        stored_experts: None,
        quantized: Default::default(),
    }
}

/// `count` examples of varied lengths with a supervised tail (like an assistant turn).
pub fn tiny_examples(count: usize, seed: u64) -> Vec<TrainExample> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..count)
        .map(|_| {
            let len = rng.random_range(5..14);
            let prompt = rng.random_range(2..len - 1);
            let input_ids = (0..len).map(|_| rng.random_range(0..40)).collect();
            let loss_mask = (0..len).map(|i| u8::from(i >= prompt)).collect();
            TrainExample {
                input_ids,
                loss_mask,
            }
        })
        .collect()
}
