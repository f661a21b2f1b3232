//! config.json -> ModelConfig for each family, both layouts, transformers' defaults, and refusals by name.

use dn_arch::{Activation, Family, ModelConfig, RopeKind};
use serde_json::{Value, json};

fn read(v: Value) -> ModelConfig {
    ModelConfig::from_json(&v, "config.json").unwrap()
}

fn refused(v: Value) -> String {
    ModelConfig::from_json(&v, "/m/config.json")
        .unwrap_err()
        .to_string()
}

fn dims(model_type: &str) -> Value {
    json!({"model_type": model_type, "hidden_size": 32, "intermediate_size": 48,
           "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2,
           "vocab_size": 100})
}

fn with(mut base: Value, extra: Value) -> Value {
    for (k, v) in extra.as_object().unwrap() {
        base[k] = v.clone();
    }
    base
}

#[test]
fn llama_defaults_and_both_rope_layouts_agree() {
    let scaling = json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 16});
    let old = read(with(
        dims("llama"),
        json!({"rope_theta": 500000.0, "rope_scaling": scaling}),
    ));
    let mut params = scaling.clone();
    params["rope_theta"] = json!(500000.0);
    let new = read(with(dims("llama"), json!({"rope_parameters": params})));
    assert_eq!(old, new);
    assert_eq!(old.family, Family::Llama);
    assert_eq!(old.head_dim, 8);
    assert_eq!(old.ropes[0].theta, 500000.0);
    assert!(matches!(old.ropes[0].kind, RopeKind::Llama3 { .. }));
    assert!(old.layers.iter().all(|l| l.window.is_none() && l.rope == 0));
    assert_eq!(old.rms_norm_eps, 1e-6);
    assert!(!old.tie_word_embeddings && !old.biases.qkv);
    // A config without any rope key uses theta 10000 (not silently another model's).
    assert_eq!(read(dims("llama")).ropes[0].theta, 10000.0);
    let biased = read(with(
        dims("llama"),
        json!({"attention_bias": true, "mlp_bias": true}),
    ));
    assert!(biased.biases.qkv && biased.biases.o && biased.biases.mlp);
}

#[test]
fn mistral_head_dim_and_window() {
    let c = read(with(
        dims("mistral"),
        json!({"head_dim": 16, "sliding_window": 5}),
    ));
    assert_eq!((c.head_dim, c.q_width(), c.kv_width()), (16, 64, 32));
    assert!(c.layers.iter().all(|l| l.window == Some(5)));
    assert!((c.attention_scale - 0.25).abs() < 1e-12);
    // transformers' default when the key is absent; null disables it.
    assert_eq!(read(dims("mistral")).layers[0].window, Some(4096));
    let none = read(with(dims("mistral"), json!({"sliding_window": null})));
    assert_eq!(none.layers[0].window, None);
}

#[test]
fn qwen2_biases_and_window_layers() {
    let c = read(dims("qwen2"));
    assert!(c.biases.qkv && !c.biases.o && !c.biases.mlp);
    assert!(c.layers.iter().all(|l| l.window.is_none()));
    let c = read(with(
        dims("qwen2"),
        json!({"use_sliding_window": true, "sliding_window": 6, "max_window_layers": 2}),
    ));
    let windows: Vec<_> = c.layers.iter().map(|l| l.window).collect();
    assert_eq!(windows, [None, None, Some(6), Some(6)]);
    let yarn = read(with(
        dims("qwen2"),
        json!({"rope_scaling": {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 8}}),
    ));
    assert!(matches!(yarn.ropes[0].kind, RopeKind::Yarn { .. }));
}

#[test]
fn qwen3_qk_norm_and_head_dim_default() {
    let mut v = dims("qwen3");
    v.as_object_mut().unwrap().remove("num_key_value_heads");
    let c = read(v);
    assert!(c.qk_norm && !c.biases.qkv);
    assert_eq!(c.head_dim, 128);
    assert_eq!(c.num_key_value_heads, 4);
}

#[test]
fn gemma2_features_and_defaults() {
    let c = read(with(
        dims("gemma2"),
        json!({"head_dim": 8, "query_pre_attn_scalar": 16}),
    ));
    assert_eq!(c.family, Family::Gemma2);
    assert_eq!(c.norm_offset, 1.0);
    assert!((c.embedding_scale.unwrap() - 32f64.sqrt()).abs() < 1e-12);
    assert!(c.sandwich_norms && c.tie_word_embeddings && !c.qk_norm);
    assert_eq!(c.activation, Activation::GeluTanh);
    assert_eq!(
        (c.attn_logit_softcap, c.final_logit_softcap),
        (Some(50.0), Some(30.0))
    );
    assert!((c.attention_scale - 0.25).abs() < 1e-12);
    let windows: Vec<_> = c.layers.iter().map(|l| l.window).collect();
    assert_eq!(windows, [Some(4096), None, Some(4096), None]);
    let uncapped = read(with(
        dims("gemma2"),
        json!({"final_logit_softcapping": null}),
    ));
    assert_eq!(uncapped.final_logit_softcap, None);
    let names = c.block_names(1);
    assert_eq!(
        names.mlp_norm,
        "model.layers.1.pre_feedforward_layernorm.weight"
    );
    assert_eq!(
        names.post_attention_norm.as_deref(),
        Some("model.layers.1.post_attention_layernorm.weight")
    );
}

#[test]
fn gemma3_rope_per_layer_type_in_both_layouts() {
    let old = read(with(
        dims("gemma3_text"),
        json!({"head_dim": 8, "sliding_window": 3, "sliding_window_pattern": 2,
               "rope_theta": 1000000.0, "rope_local_base_freq": 10000.0,
               "rope_scaling": {"rope_type": "linear", "factor": 8.0}}),
    ));
    let new = read(with(
        dims("gemma3_text"),
        json!({"head_dim": 8, "sliding_window": 3,
               "layer_types": ["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
               "rope_parameters": {
                   "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1000000.0},
                   "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}}}),
    ));
    assert_eq!(old, new);
    assert!(old.qk_norm && old.sandwich_norms);
    let full = &old.ropes[old.layers[1].rope];
    let local = &old.ropes[old.layers[0].rope];
    assert_eq!((full.theta, local.theta), (1e6, 1e4));
    assert_eq!(full.kind, RopeKind::Linear { factor: 8.0 });
    assert_eq!(old.layers[0].window, Some(3));
    assert_eq!(old.layers[1].window, None);
    // The multimodal checkpoint: its text model, under model.language_model.
    let mm = read(
        json!({"model_type": "gemma3", "text_config": with(dims("gemma3_text"), json!({"head_dim": 8})),
                         "vision_config": {"hidden_size": 8}}),
    );
    assert_eq!(mm.embed_name(), "model.language_model.embed_tokens.weight");
    assert_eq!(mm.family, Family::Gemma3);
}

#[test]
fn phi3_fused_longrope_and_partial_rotary() {
    let c = read(with(
        dims("phi3"),
        json!({"partial_rotary_factor": 0.75, "original_max_position_embeddings": 8,
               "max_position_embeddings": 32, "sliding_window": 6,
               "rope_scaling": {"type": "su", "short_factor": [1.0, 1.0, 1.0],
                                "long_factor": [2.0, 3.0, 4.0]}}),
    ));
    assert!(c.fused_projections);
    assert_eq!(
        c.target_names(),
        ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"]
    );
    assert_eq!(c.ropes[0].rotary_dim, 6);
    assert!(matches!(
        &c.ropes[0].kind,
        RopeKind::LongRope {
            original_max_position_embeddings: 8,
            ..
        }
    ));
    assert_eq!(c.layers[0].window, Some(6));
    assert_eq!(c.rms_norm_eps, 1e-5);
    assert_eq!(c.ropes[0].frequencies(9).inv_freq[0], 0.5);
    assert_eq!(c.ropes[0].frequencies(8).inv_freq[0], 1.0);
}

#[test]
fn unsupported_models_are_refused_by_name() {
    let e = refused(dims("gpt2"));
    assert!(
        e.contains("/m/config.json") && e.contains("gpt2") && e.contains("qwen3"),
        "{e}"
    );
    let e = refused(dims("deepseek_v3"));
    assert!(
        e.contains("mixture-of-experts") && e.contains("latent"),
        "{e}"
    );
    let e = refused(dims("llama4"));
    assert!(e.contains("mixture-of-experts design"), "{e}");
    let e = refused(with(
        dims("qwen3_moe"),
        json!({"num_experts": 4, "quantization_config": {"quant_method": "mxfp4"}}),
    ));
    assert!(e.contains("mxfp4"), "{e}");
    let e = refused(with(dims("qwen2"), json!({"num_experts": 8})));
    assert!(e.contains("num_experts"), "{e}");
    let e = refused(with(
        dims("llama"),
        json!({"quantization_config": {"quant_method": "gptq"}}),
    ));
    assert!(e.contains("gptq") && e.contains("GPTQ"), "{e}");
    let e = refused(with(
        dims("llama"),
        json!({"quantization_config": {"quant_method": "bitsandbytes", "load_in_8bit": true}}),
    ));
    assert!(e.contains("8-bit") && e.contains("load_in_8bit"), "{e}");
    let e = refused(with(
        dims("qwen2"),
        json!({"quantization_config": {"quant_method": "awq", "bits": 4}}),
    ));
    assert!(e.contains("\"awq\"") && e.contains("AWQ"), "{e}");
    // Read as what they store: bitsandbytes 4-bit (transformers' default type is fp4).
    let c = read(with(
        dims("llama"),
        json!({"quantization_config": {"quant_method": "bitsandbytes", "load_in_4bit": true,
               "bnb_4bit_quant_type": "nf4", "bnb_4bit_use_double_quant": true}}),
    ));
    assert_eq!(
        c.quantization,
        Some(dn_arch::StoredQuantization::Bnb4 {
            quant_type: dn_arch::Bnb4Type::Nf4,
            double_quant: true
        })
    );
    let c = read(with(
        dims("llama"),
        json!({"quantization_config": {"quant_method": "bitsandbytes", "load_in_4bit": true}}),
    ));
    assert_eq!(c.quantization.unwrap().to_string(), "bitsandbytes fp4");
    let e = refused(with(
        dims("llama"),
        json!({"rope_scaling": {"rope_type": "dynamic", "factor": 2.0}}),
    ));
    assert!(e.contains("dynamic") && e.contains("rope_scaling"), "{e}");
    let e = refused(with(dims("llama"), json!({"hidden_act": "relu"})));
    assert!(e.contains("hidden_act") && e.contains("relu"), "{e}");
    let e = refused(with(
        dims("gemma3_text"),
        json!({"use_bidirectional_attention": true}),
    ));
    assert!(e.contains("use_bidirectional_attention"), "{e}");
    let e = refused(with(dims("llama"), json!({"hidden_size": "big"})));
    assert!(e.contains("hidden_size"), "{e}");
    let e = refused(json!({"model_type": "llama"}));
    assert!(e.contains("hidden_size is missing"), "{e}");
}

#[test]
fn parameter_count_matches_the_tensors() {
    // SmolLM2-135M: 134,515,008 parameters (tied).
    let c = read(
        json!({"model_type": "llama", "hidden_size": 576, "intermediate_size": 1536,
        "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3,
        "vocab_size": 49152, "tie_word_embeddings": true}),
    );
    assert_eq!(c.parameter_count(), 134_515_008);
}

/// The MoE configs as their hub repos write them: Qwen3-30B-A3B (30.5B parameters, 3.3B active) and
/// Mixtral-8x7B (46.7B, 12.9B active), as their model cards give them.
#[test]
fn mixture_of_experts_configs_and_their_parameter_counts() {
    let qwen = read(json!({
        "model_type": "qwen3_moe", "hidden_size": 2048, "intermediate_size": 6144,
        "moe_intermediate_size": 768, "num_hidden_layers": 48, "num_attention_heads": 32,
        "num_key_value_heads": 4, "head_dim": 128, "num_experts": 128, "num_experts_per_tok": 8,
        "norm_topk_prob": true, "decoder_sparse_step": 1, "mlp_only_layers": [], "vocab_size": 151936,
        "tie_word_embeddings": false, "rope_theta": 1000000.0, "max_position_embeddings": 40960,
        "use_sliding_window": false, "sliding_window": null
    }));
    assert_eq!(qwen.family, Family::Qwen3Moe);
    let e = qwen.experts.unwrap();
    assert_eq!((e.count, e.top_k, e.intermediate_size), (128, 8, 768));
    assert!(e.normalize_top_k && qwen.qk_norm);
    assert!(qwen.layers.iter().all(|l| l.sparse && l.window.is_none()));
    let billions = |n: u64| (n as f64 / 1e8).round() / 10.0;
    assert_eq!(billions(qwen.parameter_count()), 30.5);
    // 3.35B counting the embedding and head (the card's "3.3B activated").
    let active = qwen.active_parameter_count() as f64 / 1e9;
    assert!((3.3..3.4).contains(&active), "{active}");
    assert_eq!(
        qwen.target_names(),
        [
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate",
            "gate_up_proj",
            "down_proj"
        ]
    );
    // `all-linear` leaves the router out (it is not a linear module to PEFT either).
    assert_eq!(
        qwen.all_linear_names(),
        [
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_up_proj",
            "down_proj"
        ]
    );
    assert_eq!(qwen.router_target(), Some("gate"));

    let mixtral = read(json!({
        "model_type": "mixtral", "hidden_size": 4096, "intermediate_size": 14336,
        "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
        "num_local_experts": 8, "num_experts_per_tok": 2, "vocab_size": 32000,
        "rope_theta": 1000000.0, "sliding_window": null, "router_aux_loss_coef": 0.02
    }));
    let e = mixtral.experts.unwrap();
    assert_eq!((e.count, e.top_k, e.intermediate_size), (8, 2, 14336));
    assert!(e.normalize_top_k);
    assert_eq!(mixtral.rms_norm_eps, 1e-5);
    assert_eq!(billions(mixtral.parameter_count()), 46.7);
    assert_eq!(billions(mixtral.active_parameter_count()), 12.9);

    // Qwen's dense layers between sparse ones.
    let mixed = read(with(
        dims("qwen3_moe"),
        json!({"num_experts": 4, "num_experts_per_tok": 2, "num_hidden_layers": 4,
               "decoder_sparse_step": 2, "mlp_only_layers": [3]}),
    ));
    let sparse: Vec<bool> = mixed.layers.iter().map(|l| l.sparse).collect();
    assert_eq!(sparse, [false, true, false, false]);
    // What the router cannot do is refused by name.
    let e = refused(with(dims("mixtral"), json!({"router_jitter_noise": 0.1})));
    assert!(e.contains("router_jitter_noise"), "{e}");
    let e = refused(with(
        dims("qwen3_moe"),
        json!({"num_experts": 4, "num_experts_per_tok": 5}),
    ));
    assert!(e.contains("num_experts_per_tok"), "{e}");
}

/// gpt-oss-20b's config as its hub repo writes it (MXFP4 experts, yarn in the older layout).
#[test]
fn gpt_oss_config() {
    let types: Vec<&str> = ["sliding_attention", "full_attention"].repeat(12);
    let c = read(json!({
        "model_type": "gpt_oss", "hidden_size": 2880, "intermediate_size": 2880, "num_hidden_layers": 24,
        "num_attention_heads": 64, "num_key_value_heads": 8, "head_dim": 64, "num_local_experts": 32,
        "num_experts_per_tok": 4, "vocab_size": 201088, "sliding_window": 128, "swiglu_limit": 7.0,
        "rope_theta": 150000, "rope_scaling": {"rope_type": "yarn", "factor": 32.0, "beta_fast": 32.0,
        "beta_slow": 1.0, "truncate": false, "original_max_position_embeddings": 4096},
        "layer_types": types,
        "quantization_config": {"quant_method": "mxfp4"}, "tie_word_embeddings": false
    }));
    assert_eq!(c.family, Family::GptOss);
    assert!(c.attention_sinks && c.biases.qkv && c.biases.o);
    let e = c.experts.unwrap();
    assert!(e.router_bias && e.biases && e.interleaved && e.normalize_top_k);
    assert_eq!(c.router_target(), Some("router"));
    assert_eq!(e.clamped_swiglu.unwrap().limit, 7.0);
    assert_eq!(c.layers[0].window, Some(128));
    assert_eq!(c.layers[1].window, None);
    assert!(matches!(
        c.ropes[0].kind,
        RopeKind::Yarn {
            truncate: false,
            ..
        }
    ));
    let billions = c.parameter_count() as f64 / 1e9;
    assert!((20.8..21.0).contains(&billions), "{billions}");
    // OpenAI's 3.6B active leaves the input embedding (0.58B) out; dn counts it, as Qwen does.
    let active = c.active_parameter_count() as f64 / 1e9;
    assert!((4.1..4.3).contains(&active), "{active}");
}
