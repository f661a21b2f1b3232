//! The architecture of a Llama-family model, read from a transformers `config.json` (a GGUF file's
//! metadata is first turned into the same JSON by `dn_render::hf_config`, so there is one parser).

use serde::Deserialize;
use serde_json::Value;

use crate::error::{Error, Result};

/// Llama-3 style frequency-dependent rope scaling (`rope_scaling.rope_type == "llama3"`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Llama3RopeScaling {
    pub factor: f64,
    pub low_freq_factor: f64,
    pub high_freq_factor: f64,
    pub original_max_position_embeddings: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub vocab_size: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: Option<Llama3RopeScaling>,
    pub tie_word_embeddings: bool,
    pub max_position_embeddings: usize,
}

#[derive(Deserialize)]
struct RawConfig {
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    vocab_size: usize,
    rms_norm_eps: Option<f64>,
    rope_theta: Option<f64>,
    rope_scaling: Option<Value>,
    tie_word_embeddings: Option<bool>,
    max_position_embeddings: Option<usize>,
    model_type: Option<String>,
}

impl LlamaConfig {
    /// Parses a transformers config; `source` names the file in errors.
    pub fn from_json(value: &Value, source: &str) -> Result<Self> {
        let raw: RawConfig = serde_json::from_value(value.clone())
            .map_err(|e| Error::model(source, format!("config: {e}")))?;
        if let Some(kind) = &raw.model_type
            && !matches!(kind.as_str(), "llama" | "mistral" | "qwen2")
        {
            return Err(Error::model(
                source,
                format!("model_type {kind:?} is not a Llama-family model this trainer supports"),
            ));
        }
        let rope_scaling = match &raw.rope_scaling {
            None | Some(Value::Null) => None,
            Some(v) => {
                let kind = v
                    .get("rope_type")
                    .or_else(|| v.get("type"))
                    .and_then(Value::as_str)
                    .unwrap_or("");
                match kind {
                    "llama3" => {
                        Some(serde_json::from_value(v.clone()).map_err(|e| {
                            Error::model(source, format!("config.rope_scaling: {e}"))
                        })?)
                    }
                    "default" => None,
                    other => {
                        return Err(Error::model(
                            source,
                            format!(
                                "config.rope_scaling: rope_type {other:?} is not supported (llama3 is)"
                            ),
                        ));
                    }
                }
            }
        };
        let heads = raw.num_attention_heads;
        if heads == 0 || raw.hidden_size % heads != 0 && raw.head_dim.is_none() {
            return Err(Error::model(
                source,
                "config: hidden_size must be a multiple of num_attention_heads",
            ));
        }
        let kv_heads = raw.num_key_value_heads.unwrap_or(heads);
        if kv_heads == 0 || heads % kv_heads != 0 {
            return Err(Error::model(
                source,
                "config: num_attention_heads must be a multiple of num_key_value_heads",
            ));
        }
        let head_dim = raw.head_dim.unwrap_or(raw.hidden_size / heads);
        if head_dim % 2 != 0 {
            return Err(Error::model(source, "config: head_dim must be even"));
        }
        Ok(LlamaConfig {
            hidden_size: raw.hidden_size,
            intermediate_size: raw.intermediate_size,
            num_hidden_layers: raw.num_hidden_layers,
            num_attention_heads: heads,
            num_key_value_heads: kv_heads,
            head_dim,
            vocab_size: raw.vocab_size,
            rms_norm_eps: raw.rms_norm_eps.unwrap_or(1e-6),
            rope_theta: raw.rope_theta.unwrap_or(10000.0),
            rope_scaling,
            tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(false),
            max_position_embeddings: raw.max_position_embeddings.unwrap_or(4096),
        })
    }

    /// The rotary inverse frequencies (`head_dim / 2` of them), computed in f32 as transformers does,
    /// with Llama-3 scaling applied when configured.
    pub fn inv_freq(&self) -> Vec<f32> {
        let dim = self.head_dim;
        let base = self.rope_theta as f32;
        let plain = (0..dim)
            .step_by(2)
            .map(|i| 1.0 / base.powf(i as f32 / dim as f32));
        let Some(s) = &self.rope_scaling else {
            return plain.collect();
        };
        let old = s.original_max_position_embeddings as f32;
        let (factor, low, high) = (
            s.factor as f32,
            s.low_freq_factor as f32,
            s.high_freq_factor as f32,
        );
        let low_wavelen = old / low;
        let high_wavelen = old / high;
        plain
            .map(|f| {
                let wavelen = 2.0 * std::f32::consts::PI / f;
                if wavelen < high_wavelen {
                    f
                } else if wavelen > low_wavelen {
                    f / factor
                } else {
                    let smooth = (old / wavelen - low) / (high - low);
                    (1.0 - smooth) * f / factor + smooth * f
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> Value {
        json!({"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
               "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 100,
               "model_type": "llama"})
    }

    #[test]
    fn defaults_and_head_dim() {
        let c = LlamaConfig::from_json(&base(), "config.json").unwrap();
        assert_eq!(c.head_dim, 16);
        assert!(!c.tie_word_embeddings);
        assert_eq!(c.inv_freq().len(), 8);
        assert_eq!(c.inv_freq()[0], 1.0);
    }

    #[test]
    fn llama3_scaling_leaves_high_frequencies_and_divides_low_ones() {
        let mut v = base();
        v["rope_scaling"] = json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 64});
        v["rope_theta"] = json!(500000.0);
        let scaled = LlamaConfig::from_json(&v, "c").unwrap();
        let mut plain = scaled.clone();
        plain.rope_scaling = None;
        let (a, b) = (scaled.inv_freq(), plain.inv_freq());
        assert_eq!(a[0], b[0]);
        assert_eq!(a[7], b[7] / 8.0);
    }

    #[test]
    fn refuses_other_architectures_naming_the_file() {
        let mut v = base();
        v["model_type"] = json!("gpt2");
        let e = LlamaConfig::from_json(&v, "/m/config.json")
            .unwrap_err()
            .to_string();
        assert!(e.contains("/m/config.json") && e.contains("gpt2"), "{e}");
    }
}
