//! The supported families, each read from config.json with transformers' defaults for the keys a config
//! leaves out. One arm per family in [`features`]: what makes it differ from Llama.

use serde_json::Value;

use crate::attention::{ropes, sliding_window};
use crate::error::{Error, Result};
use crate::experts::{experts, sparse_layers};
use crate::json::Fields;
use crate::{Activation, Biases, ClampedSwiglu, Layer, ModelConfig};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// Llama 2/3.x, SmolLM2 and other `LlamaForCausalLM` checkpoints.
    Llama,
    Mistral,
    /// Qwen2 and Qwen2.5.
    Qwen2,
    Qwen3,
    Gemma2,
    /// Gemma 3 (the text model, alone or inside the multimodal checkpoint).
    Gemma3,
    /// Phi-3, Phi-3.5 and Phi-4-mini.
    Phi3,
    /// Qwen3's mixture of experts (Qwen3-30B-A3B, 235B-A22B, Coder-30B-A3B).
    Qwen3Moe,
    /// Mixtral 8x7B and 8x22B.
    Mixtral,
    /// Qwen1.5-MoE and Qwen2-57B-A14B: Qwen2's attention, experts and a gated shared expert.
    Qwen2Moe,
    /// gpt-oss-20b and 120b: attention sinks and biases, clamped experts with biases.
    GptOss,
}

/// The `model_type` values dn trains.
pub const SUPPORTED_MODEL_TYPES: [&str; 12] = [
    "llama",
    "mistral",
    "qwen2",
    "qwen3",
    "gemma2",
    "gemma3_text",
    "gemma3",
    "phi3",
    "qwen3_moe",
    "mixtral",
    "qwen2_moe",
    "gpt_oss",
];

impl Family {
    pub fn from_model_type(model_type: &str) -> Option<Family> {
        Some(match model_type {
            "llama" => Family::Llama,
            "mistral" => Family::Mistral,
            "qwen2" => Family::Qwen2,
            "qwen3" => Family::Qwen3,
            "gemma2" => Family::Gemma2,
            "gemma3" | "gemma3_text" => Family::Gemma3,
            "phi3" => Family::Phi3,
            "qwen3_moe" => Family::Qwen3Moe,
            "mixtral" => Family::Mixtral,
            "qwen2_moe" => Family::Qwen2Moe,
            "gpt_oss" => Family::GptOss,
            _ => return None,
        })
    }

    /// The family's name in catalogs and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Family::Llama => "llama",
            Family::Mistral => "mistral",
            Family::Qwen2 => "qwen2",
            Family::Qwen3 => "qwen3",
            Family::Gemma2 => "gemma2",
            Family::Gemma3 => "gemma3",
            Family::Phi3 => "phi3",
            Family::Qwen3Moe => "qwen3_moe",
            Family::Mixtral => "mixtral",
            Family::Qwen2Moe => "qwen2_moe",
            Family::GptOss => "gpt_oss",
        }
    }

    fn is_gemma(&self) -> bool {
        matches!(self, Family::Gemma2 | Family::Gemma3)
    }

    /// Whether its MLPs are (or may be) a mixture of experts.
    fn is_moe(&self) -> bool {
        matches!(
            self,
            Family::Qwen3Moe | Family::Mixtral | Family::Qwen2Moe | Family::GptOss
        )
    }
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a known but untrainable `model_type` is refused.
fn refusal(model_type: &str) -> Option<&'static str> {
    Some(match model_type {
        "deepseek_v2" | "deepseek_v3" | "kimi_k2" => {
            "mixture-of-experts models with multi-head latent attention cannot be trained (qwen3_moe, qwen2_moe, gpt_oss and mixtral can)"
        }
        "qwen3_next" | "qwen3_5_moe" => {
            "models with linear attention layers cannot be trained (qwen3_moe, qwen2_moe, gpt_oss and mixtral can)"
        }
        "phimoe" | "olmoe" | "granitemoe" | "llama4" | "llama4_text" | "glm4_moe" | "dots1"
        | "ernie4_5_moe" | "hunyuan_v1_moe" => {
            "this mixture-of-experts design cannot be trained (qwen3_moe, qwen2_moe, gpt_oss and mixtral can)"
        }
        "llava" | "mistral3" | "qwen2_vl" | "qwen2_5_vl" | "qwen3_vl" | "gemma3n"
        | "phi4_multimodal" | "mllama" | "idefics3" | "paligemma" => {
            "multimodal models cannot be trained yet (only Gemma 3's text model can)"
        }
        _ => return None,
    })
}

/// Keys whose presence means a feature dn does not implement (experts, in a family without them).
fn unsupported_keys(f: &Fields<'_>, family: Family) -> Result<Option<String>> {
    for key in ["num_local_experts", "num_experts", "n_routed_experts"] {
        if !family.is_moe() && f.usize(key).ok().flatten().is_some_and(|n| n > 0) {
            return Ok(Some(format!(
                "{key}: a mixture of experts in a {family} model cannot be trained (qwen3_moe, qwen2_moe, gpt_oss and mixtral can)"
            )));
        }
    }
    if let Some(q) = f.object("quantization_config")?
        && let Err(why) = crate::quant::read(q, family)
    {
        return Ok(Some(why));
    }
    if f.has("vision_config") || f.has("audio_config") {
        return Ok(Some(
            "vision_config: multimodal models cannot be trained yet (only Gemma 3's text model can)"
                .into(),
        ));
    }
    Ok(None)
}

/// Reads the whole config (see [`ModelConfig::from_json`]).
pub(crate) fn read(value: &Value, file: &str) -> Result<ModelConfig> {
    let Value::Object(top) = value else {
        return Err(Error::new(file, "config is not a JSON object"));
    };
    let outer = Fields::new(top, "", file);
    let model_type = outer.str("model_type")?.ok_or_else(|| {
        Error::new(
            file,
            format!(
                "model_type is missing (supported: {})",
                SUPPORTED_MODEL_TYPES.join(", ")
            ),
        )
    })?;
    if let Some(why) = refusal(model_type) {
        return Err(Error::new(
            file,
            format!("model_type {model_type:?}: {why}"),
        ));
    }
    let family = Family::from_model_type(model_type).ok_or_else(|| {
        Error::new(
            file,
            format!(
                "model_type {model_type:?} is not supported (supported: {})",
                SUPPORTED_MODEL_TYPES.join(", ")
            ),
        )
    })?;
    // Gemma 3's multimodal checkpoint: its text model is `text_config`, its weights under
    // `model.language_model.`; the vision tower is left as it is.
    let (map, path, prefix) = if model_type == "gemma3" {
        let text = outer
            .object("text_config")?
            .ok_or_else(|| Error::new(file, "model_type \"gemma3\" without text_config"))?;
        (text, "text_config", "model.language_model.")
    } else {
        if let Some(why) = unsupported_keys(&outer, family)? {
            return Err(Error::new(file, why));
        }
        (top, "", "model.")
    };
    let f = Fields::new(map, path, file);
    if path == "text_config"
        && let Some(why) = unsupported_keys(&f, family)?
    {
        return Err(Error::new(file, why));
    }
    let mut config = common(&f, family, model_type, prefix, file)?;
    config.quantization = outer
        .object("quantization_config")?
        .and_then(|q| crate::quant::read(q, family).ok());
    Ok(config)
}

fn common(
    f: &Fields<'_>,
    family: Family,
    model_type: &str,
    prefix: &str,
    file: &str,
) -> Result<ModelConfig> {
    let hidden_size = f.dim("hidden_size")?;
    let heads = f.dim("num_attention_heads")?;
    let kv_default = match family {
        Family::Mistral | Family::Mixtral => 8,
        Family::Gemma2 | Family::Gemma3 => 4,
        _ => heads,
    };
    let kv_heads = f.usize("num_key_value_heads")?.unwrap_or(kv_default);
    if kv_heads == 0 || heads % kv_heads != 0 {
        return Err(Error::new(
            file,
            format!(
                "num_attention_heads ({heads}) must be a multiple of num_key_value_heads ({kv_heads})"
            ),
        ));
    }
    let head_dim = match (f.usize("head_dim")?, family) {
        (Some(n), _) if n > 0 => n,
        (Some(_), _) => return Err(Error::new(file, "head_dim must be at least 1")),
        (None, Family::Qwen3) => 128,
        (None, Family::GptOss) => 64,
        (None, Family::Gemma2 | Family::Gemma3) => 256,
        (None, _) => {
            if hidden_size % heads != 0 {
                return Err(Error::new(
                    file,
                    "hidden_size must be a multiple of num_attention_heads when head_dim is not given",
                ));
            }
            hidden_size / heads
        }
    };
    let num_layers = f.dim("num_hidden_layers")?;
    let max_position_embeddings = f.usize("max_position_embeddings")?.unwrap_or(match family {
        Family::Llama => 2048,
        Family::Mistral | Family::Mixtral | Family::GptOss => 131072,
        Family::Qwen2 | Family::Qwen3 | Family::Qwen3Moe | Family::Qwen2Moe => 32768,
        Family::Gemma2 => 8192,
        Family::Gemma3 => 131072,
        Family::Phi3 => 4096,
    });
    let gemma = family.is_gemma();
    let activation_key = if gemma {
        "hidden_activation"
    } else {
        "hidden_act"
    };
    let activation_name = f
        .str(activation_key)?
        .or(if gemma { f.str("hidden_act")? } else { None })
        .unwrap_or(if gemma { "gelu_pytorch_tanh" } else { "silu" });
    let activation = match activation_name {
        "silu" | "swish" => Activation::Silu,
        "gelu_pytorch_tanh" | "gelu_new" | "gelu_fast" => Activation::GeluTanh,
        other => {
            return Err(Error::new(
                file,
                format!(
                    "{activation_key} {other:?} is not supported (silu and gelu_pytorch_tanh are)"
                ),
            ));
        }
    };
    let mut config = ModelConfig {
        family,
        model_type: model_type.to_owned(),
        hidden_size,
        intermediate_size: f.dim("intermediate_size")?,
        num_hidden_layers: num_layers,
        num_attention_heads: heads,
        num_key_value_heads: kv_heads,
        head_dim,
        vocab_size: f.dim("vocab_size")?,
        rms_norm_eps: f.f64("rms_norm_eps")?.unwrap_or(match family {
            Family::Phi3 | Family::Mixtral | Family::GptOss => 1e-5,
            _ => 1e-6,
        }),
        tie_word_embeddings: f.bool("tie_word_embeddings")?.unwrap_or(gemma),
        max_position_embeddings,
        activation,
        norm_offset: 0.0,
        embedding_scale: None,
        attention_scale: 1.0 / (head_dim as f64).sqrt(),
        attn_logit_softcap: None,
        final_logit_softcap: None,
        qk_norm: false,
        sandwich_norms: false,
        fused_projections: false,
        biases: Biases::default(),
        experts: None,
        attention_sinks: false,
        quantization: None,
        ropes: Vec::new(),
        layers: Vec::new(),
        prefix: prefix.to_owned(),
    };
    let layer_types = features(f, &mut config, file)?;
    if layer_types.len() != num_layers {
        return Err(Error::new(
            file,
            format!(
                "layer_types has {} entries for {num_layers} layers",
                layer_types.len()
            ),
        ));
    }
    config.ropes = ropes(f, &config, file)?;
    let window = sliding_window(f, family)?;
    let per_type = config.ropes.len() == 2;
    let sparse = sparse_layers(f, &config, file)?;
    config.layers = layer_types
        .iter()
        .zip(sparse)
        .map(|(t, sparse)| {
            let sliding = t == "sliding_attention";
            Layer {
                window: if sliding { window } else { None },
                rope: usize::from(per_type && sliding),
                sparse,
            }
        })
        .collect();
    Ok(config)
}

/// The family's features, set on `c`; returns each layer's type (`full_attention` / `sliding_attention`).
fn features(f: &Fields<'_>, c: &mut ModelConfig, file: &str) -> Result<Vec<String>> {
    let n = c.num_hidden_layers;
    let all = |t: &str| vec![t.to_owned(); n];
    let given_types = |f: &Fields<'_>| -> Result<Option<Vec<String>>> {
        Ok(f.strings("layer_types")?
            .map(|v| v.into_iter().map(str::to_owned).collect()))
    };
    let attention_bias = f.bool("attention_bias")?.unwrap_or(false);
    let layer_types = match c.family {
        Family::Llama => {
            c.biases = Biases {
                qkv: attention_bias,
                o: attention_bias,
                mlp: f.bool("mlp_bias")?.unwrap_or(false),
            };
            all("full_attention")
        }
        // Mistral, Mixtral and Phi-3 apply `sliding_window` (when set) to every layer.
        Family::Mistral => all("sliding_attention"),
        Family::Mixtral => {
            c.experts = Some(experts(f, c, "intermediate_size", 8, 2, Some(true))?);
            all("sliding_attention")
        }
        // Qwen2-MoE: Qwen2's q/k/v biases (`qkv_bias`), a shared expert; its window (when
        // `use_sliding_window`) on the odd-numbered layers (1, 3, ...) below `max_window_layers`.
        Family::Qwen2Moe => {
            let bias = f.bool("qkv_bias")?.unwrap_or(true);
            c.biases.qkv = bias;
            let mut experts = experts(f, c, "moe_intermediate_size", 60, 4, None)?;
            let shared = f.usize("shared_expert_intermediate_size")?.unwrap_or(5632);
            experts.shared_expert = (shared > 0).then_some(shared);
            c.experts = Some(experts);
            match given_types(f)? {
                Some(types) => types,
                None => {
                    let below = f.usize("max_window_layers")?.unwrap_or(28);
                    let on = f.bool("use_sliding_window")?.unwrap_or(false);
                    (0..n)
                        .map(|i| {
                            if (i + 1) % 2 == 1 && i < below && on {
                                "sliding_attention".to_owned()
                            } else {
                                "full_attention".to_owned()
                            }
                        })
                        .collect()
                }
            }
        }
        // gpt-oss: biases on q/k/v/o (`attention_bias`), sinks, sliding and full layers alternating (or per
        // `layer_types`); a router with a bias whose top-k logits are softmaxed; experts with biases and the
        // clamped SwiGLU.
        Family::GptOss => {
            let bias = f.bool("attention_bias")?.unwrap_or(true);
            c.biases = Biases {
                qkv: bias,
                o: bias,
                mlp: false,
            };
            c.attention_sinks = true;
            // The softmax of the top-k logits: the renormalised top-k of the full softmax.
            let mut experts = experts(f, c, "intermediate_size", 128, 4, Some(true))?;
            experts.router_bias = true;
            experts.biases = true;
            let alpha = f.f64("swiglu_alpha")?.unwrap_or(1.702);
            let limit = f.f64("swiglu_limit")?.unwrap_or(7.0);
            if !(alpha.is_finite() && limit.is_finite() && limit > 0.0) {
                return Err(Error::new(
                    file,
                    "swiglu_alpha and swiglu_limit must be finite, the limit positive",
                ));
            }
            experts.clamped_swiglu = Some(ClampedSwiglu { alpha, limit });
            experts.interleaved = true;
            c.experts = Some(experts);
            match given_types(f)? {
                Some(types) => types,
                None => (0..n)
                    .map(|i| {
                        if (i + 1) % 2 == 1 {
                            "sliding_attention".to_owned()
                        } else {
                            "full_attention".to_owned()
                        }
                    })
                    .collect(),
            }
        }
        // Qwen3-MoE applies its window (when `use_sliding_window`) to every layer.
        Family::Qwen3Moe => {
            c.qk_norm = true;
            c.biases = Biases {
                qkv: attention_bias,
                o: attention_bias,
                mlp: false,
            };
            c.experts = Some(experts(f, c, "moe_intermediate_size", 128, 8, None)?);
            all("sliding_attention")
        }
        Family::Phi3 => {
            c.fused_projections = true;
            all("sliding_attention")
        }
        Family::Qwen2 | Family::Qwen3 => {
            if c.family == Family::Qwen2 {
                c.biases.qkv = true;
            } else {
                c.qk_norm = true;
                c.biases = Biases {
                    qkv: attention_bias,
                    o: attention_bias,
                    mlp: false,
                };
            }
            match given_types(f)? {
                Some(types) => types,
                None => {
                    let first_sliding = f.usize("max_window_layers")?.unwrap_or(28);
                    (0..n)
                        .map(|i| {
                            if i >= first_sliding {
                                "sliding_attention".to_owned()
                            } else {
                                "full_attention".to_owned()
                            }
                        })
                        .collect()
                }
            }
        }
        Family::Gemma2 | Family::Gemma3 => {
            if f.bool("use_bidirectional_attention")? == Some(true) {
                return Err(Error::new(
                    file,
                    "use_bidirectional_attention: bidirectional (embedding) Gemma models cannot be trained as causal language models",
                ));
            }
            c.norm_offset = 1.0;
            c.embedding_scale = Some((c.hidden_size as f64).sqrt());
            c.sandwich_norms = true;
            c.biases = Biases {
                qkv: attention_bias,
                o: attention_bias,
                mlp: false,
            };
            let scalar = f.f64("query_pre_attn_scalar")?.unwrap_or(256.0);
            if !(scalar.is_finite() && scalar > 0.0) {
                return Err(Error::new(file, "query_pre_attn_scalar must be positive"));
            }
            c.attention_scale = 1.0 / scalar.sqrt();
            let cap = |key: &str, default: Option<f64>| -> Result<Option<f64>> {
                match f.get(key) {
                    None if f.has_key(key) => Ok(None),
                    None => Ok(default),
                    Some(_) => match f.f64(key)? {
                        Some(v) if v.is_finite() && v > 0.0 => Ok(Some(v)),
                        Some(v) => Err(Error::new(
                            file,
                            format!("{key} must be positive (got {v})"),
                        )),
                        None => Ok(None),
                    },
                }
            };
            if c.family == Family::Gemma2 {
                c.attn_logit_softcap = cap("attn_logit_softcapping", Some(50.0))?;
                c.final_logit_softcap = cap("final_logit_softcapping", Some(30.0))?;
                match given_types(f)? {
                    Some(types) => types,
                    None => (0..n)
                        .map(|i| {
                            if (i + 1) % 2 == 1 {
                                "sliding_attention".to_owned()
                            } else {
                                "full_attention".to_owned()
                            }
                        })
                        .collect(),
                }
            } else {
                c.qk_norm = true;
                c.attn_logit_softcap = cap("attn_logit_softcapping", None)?;
                c.final_logit_softcap = cap("final_logit_softcapping", None)?;
                match given_types(f)? {
                    Some(types) => types,
                    None => {
                        let pattern = f
                            .usize("sliding_window_pattern")?
                            .or(f.usize("_sliding_window_pattern")?)
                            .unwrap_or(6)
                            .max(1);
                        (0..n)
                            .map(|i| {
                                if (i + 1) % pattern != 0 {
                                    "sliding_attention".to_owned()
                                } else {
                                    "full_attention".to_owned()
                                }
                            })
                            .collect()
                    }
                }
            }
        }
    };
    for t in &layer_types {
        if t != "full_attention" && t != "sliding_attention" {
            return Err(Error::new(
                file,
                format!(
                    "layer_types: {t:?} is not supported (full_attention and sliding_attention are)"
                ),
            ));
        }
    }
    Ok(layer_types)
}
