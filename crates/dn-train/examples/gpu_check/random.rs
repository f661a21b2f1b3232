//! Random Llama-family models of real shapes, built in memory on any device.

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use dn_train::{BaseModel, ModelConfig, Result};

/// The shapes of a Llama-family model.
pub struct Shape {
    pub name: &'static str,
    pub hidden: usize,
    pub intermediate: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub vocab: usize,
    pub tied: bool,
    pub rope_theta: f64,
}

/// SmolLM2-135M's shapes.
pub const SMOLLM2: Shape = Shape {
    name: "SmolLM2-135M-shaped",
    hidden: 576,
    intermediate: 1536,
    layers: 30,
    heads: 9,
    kv_heads: 3,
    vocab: 49152,
    tied: true,
    rope_theta: 100000.0,
};

/// Llama-3.1-8B's shapes (without its rope scaling: the cost is the same).
pub const LLAMA_8B: Shape = Shape {
    name: "Llama-3.1-8B-shaped",
    hidden: 4096,
    intermediate: 14336,
    layers: 32,
    heads: 32,
    kv_heads: 8,
    vocab: 128256,
    tied: false,
    rope_theta: 500000.0,
};

impl Shape {
    pub fn config(&self, layers: usize) -> Result<ModelConfig> {
        let json = serde_json::json!({
            "model_type": "llama", "hidden_size": self.hidden, "intermediate_size": self.intermediate,
            "num_hidden_layers": layers, "num_attention_heads": self.heads,
            "num_key_value_heads": self.kv_heads, "vocab_size": self.vocab, "rms_norm_eps": 1e-5,
            "rope_theta": self.rope_theta, "tie_word_embeddings": self.tied,
            "max_position_embeddings": 8192
        });
        Ok(ModelConfig::from_json(&json, self.name)?)
    }

    /// Weights drawn from N(0, 0.02) (transformers' init), norms 1, in `dtype` on `device`.
    pub fn random(&self, layers: usize, dtype: DType, device: &Device) -> Result<BaseModel> {
        let config = self.config(layers)?;
        let mut tensors = HashMap::new();
        let mut add = |name: String, shape: (usize, usize)| -> Result<()> {
            let t = Tensor::randn(0f32, 0.02, shape, device)?.to_dtype(dtype)?;
            tensors.insert(name, t);
            Ok(())
        };
        let (d, f, v) = (self.hidden, self.intermediate, self.vocab);
        let hd = d / self.heads;
        add("model.embed_tokens.weight".into(), (v, d))?;
        if !self.tied {
            add("lm_head.weight".into(), (v, d))?;
        }
        for i in 0..layers {
            let p = format!("model.layers.{i}");
            add(format!("{p}.self_attn.q_proj.weight"), (self.heads * hd, d))?;
            add(
                format!("{p}.self_attn.k_proj.weight"),
                (self.kv_heads * hd, d),
            )?;
            add(
                format!("{p}.self_attn.v_proj.weight"),
                (self.kv_heads * hd, d),
            )?;
            add(format!("{p}.self_attn.o_proj.weight"), (d, self.heads * hd))?;
            add(format!("{p}.mlp.gate_proj.weight"), (f, d))?;
            add(format!("{p}.mlp.up_proj.weight"), (f, d))?;
            add(format!("{p}.mlp.down_proj.weight"), (d, f))?;
        }
        let ones = Tensor::ones(d, dtype, device)?;
        for i in 0..layers {
            tensors.insert(
                format!("model.layers.{i}.input_layernorm.weight"),
                ones.clone(),
            );
            tensors.insert(
                format!("model.layers.{i}.post_attention_layernorm.weight"),
                ones.clone(),
            );
        }
        tensors.insert("model.norm.weight".into(), ones);
        Ok(BaseModel {
            config,
            tensors,
            source: PathBuf::from(self.name),
            stored_experts: None,
            quantized: Default::default(),
        })
    }

    /// The same weights in another dtype on another device.
    pub fn moved(base: &BaseModel, dtype: DType, device: &Device) -> Result<BaseModel> {
        let tensors = base
            .tensors
            .iter()
            .map(|(k, t)| Ok((k.clone(), t.to_device(device)?.to_dtype(dtype)?)))
            .collect::<Result<_>>()?;
        Ok(BaseModel {
            config: base.config.clone(),
            tensors,
            source: base.source.clone(),
            stored_experts: None,
            quantized: Default::default(),
        })
    }
}

/// `count` examples of `len` random tokens (ChaCha from `seed`), the second half supervised.
pub fn examples(
    count: usize,
    lens: &[usize],
    vocab: usize,
    seed: u64,
) -> Vec<dn_train::TrainExample> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..count)
        .map(|i| {
            let len = lens[i % lens.len()];
            dn_train::TrainExample {
                input_ids: (0..len)
                    .map(|_| rng.random_range(0..vocab as u32))
                    .collect(),
                loss_mask: (0..len).map(|t| u8::from(t >= len / 2)).collect(),
            }
        })
        .collect()
}
