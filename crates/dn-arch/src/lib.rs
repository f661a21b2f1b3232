//! Model architectures as data. A transformers `config.json` (either layout: transformers 5's
//! `rope_parameters`, or the older top-level rope keys) is read into one [`ModelConfig`]: the family and
//! every feature that makes it differ from Llama (biases, q/k norms, norm offset, activation, soft-caps,
//! sliding windows per layer, rope per layer type, fused projections, embedding scale, tied head), and the
//! weight names in transformers' layout. The weight loader, both training executors, the PEFT names and
//! the catalog read this one description; a new family is one arm in `family.rs` and, where it brings a
//! new feature, that feature in the executors. Pure: no I/O, no tensors.
//!
//! Either layout of config.json is read: transformers 5's `rope_parameters` (possibly one per layer type) or
//! the older top-level rope keys, and Gemma 3's multimodal wrapper through its `text_config`. The description
//! holds transformers' defaults for what the file leaves out and the weight names in transformers' layout
//! (`names`: the block's projections in execution order, its norms). `rope` computes the inverse frequencies
//! and cos/sin factor of each rope type in f32 as transformers does. Anything it cannot describe is refused
//! by name (other `model_type`s and mixture-of-experts designs, quantized checkpoints, other rope types).
//! A mixture of experts is a feature ([`Experts`], and [`Layer::sparse`] per layer), not a family fork.
//! `lora_target_modules` validation reads it too.

mod attention;
mod error;
mod experts;
mod family;
mod json;
mod names;
mod quant;
mod rope;

pub use error::{Error, Result};
pub use family::{Family, SUPPORTED_MODEL_TYPES};
pub use names::{
    ALL_PROJECTION_NAMES, BlockNames, EXPERT_TARGETS, ExpertNames, Projection, ROUTER_TARGETS, Role,
};
pub use quant::{Bnb4Type, StoredQuantization};
pub use rope::{Frequencies, ROPE_TYPES, Rope, RopeKind};

/// The MLP's activation, applied to the gate: `act(gate) * up`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `x * sigmoid(x)` (SwiGLU): Llama, Mistral, Qwen, Phi-3.
    Silu,
    /// GELU with the tanh approximation (`gelu_pytorch_tanh`, GeGLU): Gemma.
    GeluTanh,
}

/// Which projections carry a (frozen) bias.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Biases {
    /// q, k and v (or the fused qkv).
    pub qkv: bool,
    pub o: bool,
    /// gate, up and down.
    pub mlp: bool,
}

/// One decoder layer's attention pattern and MLP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layer {
    /// Sliding window: a token sees itself and the `window - 1` tokens before it. `None`: all before it.
    pub window: Option<usize>,
    /// Index into [`ModelConfig::ropes`] (0, or 1 for sliding layers of a model with a rope per layer type).
    pub rope: usize,
    /// The MLP is the model's mixture of experts ([`ModelConfig::experts`]); else the dense gated MLP.
    pub sparse: bool,
}

/// A mixture-of-experts MLP as transformers 5 computes it: a router `[experts, hidden]` (no bias), the
/// softmax of its logits in f32 over all experts, the `top_k` largest kept (renormalised to sum to 1 when
/// `normalize_top_k`), and each token's output the weighted sum of its experts' gated MLPs, held fused as
/// `gate_up_proj [experts, 2 * intermediate, hidden]` (gate rows first) and `down_proj [experts, hidden,
/// intermediate]`. Qwen2-MoE adds a shared expert every token goes through, its output scaled by
/// `sigmoid(x g^T)` (`shared_expert_gate [1, hidden]`). gpt-oss's router has a bias and softmaxes its
/// top-k logits (which is the renormalised top-k of the full softmax), its experts have biases, gate and
/// up interleaved, and a clamped SwiGLU.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Experts {
    pub count: usize,
    pub top_k: usize,
    /// Each expert's MLP width (`moe_intermediate_size`, or Mixtral's `intermediate_size`).
    pub intermediate_size: usize,
    pub normalize_top_k: bool,
    /// The shared expert's MLP width (`shared_expert_intermediate_size`), where there is one.
    pub shared_expert: Option<usize>,
    /// The router adds a bias `[experts]` to its logits (gpt-oss).
    pub router_bias: bool,
    /// gate_up and down carry biases `[experts, out]` (gpt-oss).
    pub biases: bool,
    /// The experts' activation when it is not the model's gated one.
    pub clamped_swiglu: Option<ClampedSwiglu>,
    /// gpt-oss: gate and up are interleaved in gate_up's rows (and bias): gate the even ones, up the odd.
    /// Its checkpoints hold the experts transposed (`gate_up_proj [experts, hidden, 2 * intermediate]`,
    /// `down_proj [experts, intermediate, hidden]`) or as MXFP4 `*_blocks`/`*_scales` of the untransposed
    /// rows; the loader brings them to the layout above, rows left interleaved (as PEFT's pairs see them).
    pub interleaved: bool,
}

/// gpt-oss's expert activation: `gate' = min(gate, limit)`, `up' = clamp(up, -limit, limit)`,
/// `(up' + 1) * gate' * sigmoid(alpha * gate')`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClampedSwiglu {
    pub alpha: f64,
    pub limit: f64,
}

/// A decoder-only model's architecture, as transformers computes it.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub family: Family,
    /// `model_type` as written (`gemma3_text`, `qwen2`, ...).
    pub model_type: String,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub vocab_size: usize,
    pub rms_norm_eps: f64,
    pub tie_word_embeddings: bool,
    pub max_position_embeddings: usize,
    pub activation: Activation,
    /// Norm weights apply as `norm_offset + w` (Gemma's `1 + w`; 0 elsewhere).
    pub norm_offset: f64,
    /// Token embeddings are multiplied by it (Gemma: sqrt(hidden_size)).
    pub embedding_scale: Option<f64>,
    /// Attention scores are `q k^T * attention_scale` (1/sqrt(head_dim), or Gemma's
    /// 1/sqrt(query_pre_attn_scalar)).
    pub attention_scale: f64,
    /// Scores become `cap * tanh(scores / cap)` before the mask (Gemma 2).
    pub attn_logit_softcap: Option<f64>,
    /// Logits become `cap * tanh(logits / cap)` (Gemma 2).
    pub final_logit_softcap: Option<f64>,
    /// RMSNorm over each head of q and k before rope (Qwen3, Gemma 3).
    pub qk_norm: bool,
    /// Norms after attention and after the MLP too, before each residual add (Gemma 2/3).
    pub sandwich_norms: bool,
    /// Each head has a learned sink logit `self_attn.sinks [heads]`: an extra column in the softmax's
    /// denominator that attends to nothing (gpt-oss).
    pub attention_sinks: bool,
    /// `qkv_proj` and `gate_up_proj` instead of q/k/v and gate/up (Phi-3).
    pub fused_projections: bool,
    pub biases: Biases,
    /// The mixture of experts of the layers whose [`Layer::sparse`] is set.
    pub experts: Option<Experts>,
    /// How the checkpoint stores its weights when quantized (`quantization_config`).
    pub quantization: Option<StoredQuantization>,
    /// Distinct rope settings; each layer points at one.
    pub ropes: Vec<Rope>,
    pub layers: Vec<Layer>,
    /// Where the text model's weights live: `model.`, or `model.language_model.` in a multimodal
    /// checkpoint whose text part is trained.
    pub prefix: String,
}

impl ModelConfig {
    /// Reads a transformers config; `file` names it in errors.
    pub fn from_json(value: &serde_json::Value, file: &str) -> Result<Self> {
        family::read(value, file)
    }

    /// Query width (`heads * head_dim`).
    pub fn q_width(&self) -> usize {
        self.num_attention_heads * self.head_dim
    }

    /// Key and value width (`kv_heads * head_dim`).
    pub fn kv_width(&self) -> usize {
        self.num_key_value_heads * self.head_dim
    }

    /// Parameters of the base model (embedding counted once when tied).
    pub fn parameter_count(&self) -> u64 {
        let (d, f, v) = (
            self.hidden_size as u64,
            self.intermediate_size as u64,
            self.vocab_size as u64,
        );
        let (q, kv) = (self.q_width() as u64, self.kv_width() as u64);
        let b = &self.biases;
        let attention =
            d * (q + 2 * kv) + q * d + u64::from(b.qkv) * (q + 2 * kv) + u64::from(b.o) * d;
        let dense_mlp = 3 * d * f + u64::from(b.mlp) * (2 * f + d);
        let sparse_mlp = self.experts.map_or(0, |e| {
            let shared = e.shared_expert.map_or(0, |s| 3 * d * s as u64 + d);
            let (count, width) = (e.count as u64, e.intermediate_size as u64);
            let biases = if e.biases { count * (2 * width + d) } else { 0 };
            count * 3 * d * width + count * d + u64::from(e.router_bias) * count + biases + shared
        });
        let sinks = if self.attention_sinks {
            self.num_attention_heads as u64
        } else {
            0
        };
        let norms = sinks
            + d * if self.sandwich_norms { 4 } else { 2 }
            + if self.qk_norm {
                2 * self.head_dim as u64
            } else {
                0
            };
        let layers: u64 = self
            .layers
            .iter()
            .map(|l| attention + norms + if l.sparse { sparse_mlp } else { dense_mlp })
            .sum();
        let head = if self.tie_word_embeddings { 0 } else { v * d };
        v * d + head + d + layers
    }

    /// Model FLOPs of training on one token in a sequence of `context` tokens, as MFU counts them (PaLM,
    /// appendix B; nanoGPT's `estimate_mfu`): `6 N + 12 L H Q T`, `N` the parameters a token multiplies
    /// by ([`Self::active_parameter_count`] less an untied input embedding, a lookup), `L` layers, `H Q`
    /// the query width, `T` the context. A convention, not the work done: a LoRA step computes no
    /// gradient of the frozen weights.
    pub fn training_flops_per_token(&self, context: f64) -> f64 {
        let lookup = if self.tie_word_embeddings {
            0
        } else {
            self.vocab_size as u64 * self.hidden_size as u64
        };
        let n = (self.active_parameter_count() - lookup) as f64;
        let attention = 12.0 * self.num_hidden_layers as f64 * self.q_width() as f64 * context;
        6.0 * n + attention
    }

    /// Parameters one token computes with: [`Self::parameter_count`] less the experts it is not routed to.
    pub fn active_parameter_count(&self) -> u64 {
        let Some(e) = self.experts else {
            return self.parameter_count();
        };
        let idle =
            (e.count - e.top_k) as u64 * 3 * self.hidden_size as u64 * e.intermediate_size as u64;
        let sparse_layers = self.layers.iter().filter(|l| l.sparse).count() as u64;
        self.parameter_count() - idle * sparse_layers
    }
}
