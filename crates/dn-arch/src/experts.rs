//! The mixture-of-experts feature read from config.json: the experts (count, top-k, width, whether the
//! top-k weights are renormalised) and which layers use them.

use serde_json::Value;

use crate::error::{Error, Result};
use crate::json::Fields;
use crate::{Experts, ModelConfig};

/// The mixture of experts of a MoE family: the expert count (`num_experts`, or `num_local_experts` as
/// transformers 5 writes it), top-k, each expert's width (from `width_key`) and whether the top-k weights
/// are renormalised (`normalize`: fixed by the family, else `norm_topk_prob`, default false).
pub(crate) fn experts(
    f: &Fields<'_>,
    c: &ModelConfig,
    width_key: &str,
    default_count: usize,
    default_top_k: usize,
    normalize: Option<bool>,
) -> Result<Experts> {
    let file = f.file();
    let count = match f.usize("num_experts")? {
        Some(n) => n,
        None => f.usize("num_local_experts")?.unwrap_or(default_count),
    };
    let top_k = f.usize("num_experts_per_tok")?.unwrap_or(default_top_k);
    if count == 0 || top_k == 0 || top_k > count {
        return Err(Error::new(
            file,
            format!(
                "num_experts_per_tok ({top_k}) must be between 1 and the number of experts ({count})"
            ),
        ));
    }
    let intermediate_size = match width_key {
        "intermediate_size" => c.intermediate_size,
        key => f.usize(key)?.unwrap_or(768),
    };
    if intermediate_size == 0 {
        return Err(Error::new(file, format!("{width_key} must be at least 1")));
    }
    if let Some(noise) = f.f64("router_jitter_noise")?
        && noise != 0.0
    {
        return Err(Error::new(
            file,
            format!(
                "router_jitter_noise {noise}: random router noise in training is not supported (set it to 0)"
            ),
        ));
    }
    if f.bool("output_router_logits")? == Some(true) {
        return Err(Error::new(
            file,
            "output_router_logits: the router's auxiliary load-balancing loss is not supported (set it to false)",
        ));
    }
    Ok(Experts {
        count,
        top_k,
        intermediate_size,
        normalize_top_k: match normalize {
            Some(fixed) => fixed,
            None => f.bool("norm_topk_prob")?.unwrap_or(false),
        },
        shared_expert: None,
        router_bias: false,
        biases: false,
        clamped_swiglu: None,
        interleaved: false,
    })
}

/// Which layers have the mixture of experts as their MLP: all of them in Mixtral; in Qwen's MoE models
/// every `decoder_sparse_step`-th layer (1: all) not listed in `mlp_only_layers`.
pub(crate) fn sparse_layers(f: &Fields<'_>, c: &ModelConfig, file: &str) -> Result<Vec<bool>> {
    let n = c.num_hidden_layers;
    if c.experts.is_none() {
        return Ok(vec![false; n]);
    }
    let step = f.usize("decoder_sparse_step")?.unwrap_or(1);
    if step == 0 {
        return Err(Error::new(file, "decoder_sparse_step must be at least 1"));
    }
    let dense: Vec<usize> = match f.get("mlp_only_layers") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_u64().map(|i| i as usize).ok_or_else(|| {
                    Error::new(file, format!("mlp_only_layers: {v} is not a layer index"))
                })
            })
            .collect::<Result<_>>()?,
        Some(other) => {
            return Err(Error::new(
                file,
                format!("mlp_only_layers must be a list of layer indices (got {other})"),
            ));
        }
    };
    Ok((0..n)
        .map(|i| !dense.contains(&i) && (i + 1) % step == 0)
        .collect())
}
