//! The attention pattern read from config.json: the window of sliding layers and the rope settings (one,
//! or one per layer type), with each family's defaults.

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::json::Fields;
use crate::rope::{RopeDefaults, read_rope};
use crate::{Family, ModelConfig, Rope};

/// The window of `sliding_attention` layers (`None`: they attend to everything before them).
pub(crate) fn sliding_window(f: &Fields<'_>, family: Family) -> Result<Option<usize>> {
    let given = f.usize("sliding_window")?;
    let window = match family {
        Family::Llama => None,
        Family::Mixtral => given,
        Family::GptOss => {
            if f.has_key("sliding_window") {
                given
            } else {
                Some(128)
            }
        }
        // transformers' defaults when the key is absent (null disables it).
        Family::Mistral | Family::Gemma2 | Family::Gemma3 => {
            if f.has_key("sliding_window") {
                given
            } else {
                Some(4096)
            }
        }
        Family::Qwen2 | Family::Qwen3 | Family::Qwen3Moe | Family::Qwen2Moe => {
            if f.bool("use_sliding_window")?.unwrap_or(false) {
                if f.has_key("sliding_window") {
                    given
                } else {
                    Some(4096)
                }
            } else {
                None
            }
        }
        Family::Phi3 => given,
    };
    if window == Some(0) {
        return Err(Error::new(f.file(), "sliding_window must be at least 1"));
    }
    Ok(window)
}

/// The model's rope: one setting, or two (full-attention layers', then sliding layers') where the config
/// gives one per layer type.
pub(crate) fn ropes(f: &Fields<'_>, c: &ModelConfig, file: &str) -> Result<Vec<Rope>> {
    let gemma3 = c.family == Family::Gemma3;
    let base_theta = f.f64("rope_theta")?;
    let partial_rotary_factor = f.f64("partial_rotary_factor")?;
    let defaults = |theta: f64, original_override: Option<usize>| RopeDefaults {
        theta,
        partial_rotary_factor,
        original_override,
        max_position_embeddings: c.max_position_embeddings,
        head_dim: c.head_dim,
        phi3_names: c.family == Family::Phi3,
    };
    let empty = Map::new();
    let params = match f.object("rope_parameters")? {
        Some(p) => Some(("rope_parameters", p)),
        None => f.object("rope_scaling")?.map(|p| ("rope_scaling", p)),
    };
    let nested = params.is_some_and(|(_, p)| {
        p.keys()
            .any(|k| k == "full_attention" || k == "sliding_attention")
    });
    if gemma3 || nested {
        // One rope per layer type. Gemma 3's older layout: `rope_scaling` and `rope_theta` are the global
        // (full-attention) layers', `rope_local_base_freq` the sliding layers'.
        let mut ropes = Vec::new();
        for kind in ["full_attention", "sliding_attention"] {
            let (key, dict) = match params {
                Some((key, p)) if nested => match p.get(kind) {
                    Some(Value::Object(d)) => (format!("{key}.{kind}"), d),
                    Some(Value::Null) | None => (format!("{key}.{kind}"), &empty),
                    Some(other) => {
                        return Err(Error::new(
                            file,
                            format!("{key}.{kind} must be an object (got {other})"),
                        ));
                    }
                },
                Some((key, p)) if kind == "full_attention" => (key.to_owned(), p),
                _ => (kind.to_owned(), &empty),
            };
            let theta = match (gemma3, kind) {
                (true, "full_attention") => base_theta.unwrap_or(1_000_000.0),
                (true, _) => f.f64("rope_local_base_freq")?.unwrap_or(10_000.0),
                _ => base_theta.unwrap_or(10_000.0),
            };
            ropes.push(read_rope(dict, &defaults(theta, None), &key, file)?);
        }
        return Ok(ropes);
    }
    let original_override = match c.family {
        Family::Phi3 => Some(f.usize("original_max_position_embeddings")?.unwrap_or(4096)),
        _ => f.usize("original_max_position_embeddings")?,
    };
    let d = defaults(base_theta.unwrap_or(10_000.0), original_override);
    let rope = match params {
        Some((key, dict)) => read_rope(dict, &d, key, file)?,
        // gpt-oss's config defaults to its yarn scaling.
        None if c.family == Family::GptOss => {
            let yarn = serde_json::json!({"rope_type": "yarn", "factor": 32.0, "beta_fast": 32.0,
                "beta_slow": 1.0, "truncate": false, "original_max_position_embeddings": 4096});
            let Value::Object(dict) = yarn else {
                unreachable!("a JSON object")
            };
            read_rope(&dict, &d, "rope_parameters", file)?
        }
        None => read_rope(&empty, &d, "rope_parameters", file)?,
    };
    Ok(vec![rope])
}
