//! Weight names in transformers' layout: the projections of a decoder block (separate or fused, in the
//! order the executors and the LoRA gradients use) and its norms.

use crate::ModelConfig;

/// What a projection computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Q,
    K,
    V,
    /// q, k and v concatenated along the output (Phi-3's `qkv_proj`).
    Qkv,
    O,
    Gate,
    Up,
    /// gate and up concatenated along the output (Phi-3's `gate_up_proj`).
    GateUp,
    Down,
}

/// One linear projection of a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Projection {
    /// PEFT's short name (`q_proj`, `gate_up_proj`, ...), a LoRA target.
    pub name: &'static str,
    /// The submodule holding it: `self_attn` or `mlp`.
    pub parent: &'static str,
    pub role: Role,
}

const fn projection(name: &'static str, parent: &'static str, role: Role) -> Projection {
    Projection { name, parent, role }
}

const SEPARATE: [Projection; 7] = [
    projection("q_proj", "self_attn", Role::Q),
    projection("k_proj", "self_attn", Role::K),
    projection("v_proj", "self_attn", Role::V),
    projection("o_proj", "self_attn", Role::O),
    projection("gate_proj", "mlp", Role::Gate),
    projection("up_proj", "mlp", Role::Up),
    projection("down_proj", "mlp", Role::Down),
];

const FUSED: [Projection; 4] = [
    projection("qkv_proj", "self_attn", Role::Qkv),
    projection("o_proj", "self_attn", Role::O),
    projection("gate_up_proj", "mlp", Role::GateUp),
    projection("down_proj", "mlp", Role::Down),
];

/// The names the experts' fused tensors take as LoRA targets, in execution order.
pub const EXPERT_TARGETS: [&str; 2] = ["gate_up_proj", "down_proj"];

/// The names a mixture of experts' router takes as a LoRA target: `gate` (Qwen-MoE, Mixtral), `router`
/// (gpt-oss). Never part of `all-linear` (the router is not a linear module to PEFT either).
pub const ROUTER_TARGETS: [&str; 2] = ["gate", "router"];

/// Every projection name any family has (what `lora_target_modules` may name).
pub const ALL_PROJECTION_NAMES: [&str; 11] = [
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
    "qkv_proj",
    "gate_up_proj",
    "gate",
    "router",
];

/// The tensors of a sparse block's mixture of experts, by full name (transformers 5's fused layout).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpertNames {
    /// The router `[experts, hidden]`.
    pub router: String,
    /// The router's module (`model.layers.{i}.mlp.gate`), where PEFT puts its LoRA pair.
    pub router_module: String,
    /// `[experts, 2 * intermediate, hidden]`, gate rows first.
    pub gate_up: String,
    /// `[experts, hidden, intermediate]`.
    pub down: String,
    /// The module holding both (`model.layers.{i}.mlp.experts`), where PEFT puts their LoRA pairs.
    pub module: String,
    /// The shared expert's gate, up and down projections and its gate `[1, hidden]` (Qwen2-MoE).
    pub shared: Option<[String; 4]>,
    /// The router's bias `[experts]`, gate_up's `[experts, 2 * intermediate]` and down's `[experts,
    /// hidden]` (gpt-oss).
    pub biases: Option<[String; 3]>,
}

/// The norm weights of block `i`, by full name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockNames {
    pub input_norm: String,
    /// Gemma's norm of the attention output.
    pub post_attention_norm: Option<String>,
    /// The norm before the MLP (`post_attention_layernorm` in Llama, `pre_feedforward_layernorm` in Gemma).
    pub mlp_norm: String,
    /// Gemma's norm of the MLP output.
    pub post_mlp_norm: Option<String>,
    pub q_norm: Option<String>,
    pub k_norm: Option<String>,
    /// The attention sinks `[heads]` (gpt-oss).
    pub sinks: Option<String>,
}

impl ModelConfig {
    /// The block's projections in execution order: attention inputs, o, MLP inputs, down.
    pub fn projections(&self) -> &'static [Projection] {
        if self.fused_projections {
            &FUSED
        } else {
            &SEPARATE
        }
    }

    /// The projections of block `i` in execution order: [`Self::projections`], less the MLP's where the
    /// block's MLP is the mixture of experts.
    pub fn layer_projections(&self, i: usize) -> &'static [Projection] {
        if self.layers[i].sparse {
            &SEPARATE[..4]
        } else {
            self.projections()
        }
    }

    /// Whether projection `p` can carry a LoRA pair. In a mixture-of-experts model a dense layer's MLP
    /// (Qwen's `mlp_only_layers`) cannot: PEFT (0.21, under transformers 5) reads MLP names in
    /// `target_modules` as the experts' fused parameters, so an adapter holding such a pair would not load.
    pub fn adaptable(&self, p: &Projection) -> bool {
        self.experts.is_none() || p.parent != "mlp"
    }

    /// The router's name as a LoRA target (`router` in gpt-oss, whose router has a bias; `gate` in the
    /// others); `None` without experts.
    pub fn router_target(&self) -> Option<&'static str> {
        let experts = self.experts?;
        Some(ROUTER_TARGETS[usize::from(experts.router_bias)])
    }

    /// The expert tensors of sparse block `i`.
    pub fn expert_names(&self, i: usize) -> ExpertNames {
        let module = format!("{}.mlp.experts", self.layer_path(i));
        let router_module = format!(
            "{}.mlp.{}",
            self.layer_path(i),
            self.router_target().unwrap_or("gate")
        );
        let router = &router_module;
        ExpertNames {
            biases: self.experts.is_some_and(|e| e.biases).then(|| {
                [
                    format!("{router}.bias"),
                    format!("{module}.gate_up_proj_bias"),
                    format!("{module}.down_proj_bias"),
                ]
            }),
            router: format!("{router}.weight"),
            router_module: router_module.clone(),
            gate_up: format!("{module}.gate_up_proj"),
            down: format!("{module}.down_proj"),
            module,
            shared: self.experts.and_then(|e| e.shared_expert).map(|_| {
                let mlp = format!("{}.mlp", self.layer_path(i));
                [
                    format!("{mlp}.shared_expert.gate_proj.weight"),
                    format!("{mlp}.shared_expert.up_proj.weight"),
                    format!("{mlp}.shared_expert.down_proj.weight"),
                    format!("{mlp}.shared_expert_gate.weight"),
                ]
            }),
        }
    }

    /// Whether `role` carries a bias.
    pub fn has_bias(&self, role: Role) -> bool {
        match role {
            Role::Q | Role::K | Role::V | Role::Qkv => self.biases.qkv,
            Role::O => self.biases.o,
            Role::Gate | Role::Up | Role::GateUp | Role::Down => self.biases.mlp,
        }
    }

    /// `model.layers.{i}` (under the checkpoint's prefix).
    pub fn layer_path(&self, i: usize) -> String {
        format!("{}layers.{i}", self.prefix)
    }

    /// The module path of projection `p` in block `i` (PEFT's module name).
    pub fn projection_path(&self, i: usize, p: &Projection) -> String {
        format!("{}.{}.{}", self.layer_path(i), p.parent, p.name)
    }

    pub fn embed_name(&self) -> String {
        format!("{}embed_tokens.weight", self.prefix)
    }

    pub fn final_norm_name(&self) -> String {
        format!("{}norm.weight", self.prefix)
    }

    /// The output head when untied (`lm_head.weight` at the checkpoint's root).
    pub fn lm_head_name(&self) -> &'static str {
        "lm_head.weight"
    }

    pub fn block_names(&self, i: usize) -> BlockNames {
        let l = self.layer_path(i);
        let norm = |name: &str| format!("{l}.{name}.weight");
        BlockNames {
            input_norm: norm("input_layernorm"),
            post_attention_norm: self
                .sandwich_norms
                .then(|| norm("post_attention_layernorm")),
            mlp_norm: if self.sandwich_norms {
                norm("pre_feedforward_layernorm")
            } else {
                norm("post_attention_layernorm")
            },
            post_mlp_norm: self
                .sandwich_norms
                .then(|| norm("post_feedforward_layernorm")),
            q_norm: self.qk_norm.then(|| norm("self_attn.q_norm")),
            k_norm: self.qk_norm.then(|| norm("self_attn.k_norm")),
            sinks: self.attention_sinks.then(|| format!("{l}.self_attn.sinks")),
        }
    }

    /// Output width of a projection.
    pub fn out_features(&self, role: Role) -> usize {
        let (d, f) = (self.hidden_size, self.intermediate_size);
        match role {
            Role::Q => self.q_width(),
            Role::K | Role::V => self.kv_width(),
            Role::Qkv => self.q_width() + 2 * self.kv_width(),
            Role::O | Role::Down => d,
            Role::Gate | Role::Up => f,
            Role::GateUp => 2 * f,
        }
    }

    /// Input width of a projection.
    pub fn in_features(&self, role: Role) -> usize {
        match role {
            Role::O => self.q_width(),
            Role::Down => self.intermediate_size,
            _ => self.hidden_size,
        }
    }

    /// The projection names `lora_target_modules` may name for this model, in execution order. In a
    /// mixture-of-experts model: the attention projections, the router (see [`Self::router_target`]) and
    /// the experts' `gate_up_proj` and `down_proj` (a pair per expert, as PEFT's `target_parameters` puts
    /// them).
    pub fn target_names(&self) -> Vec<&'static str> {
        if let Some(router) = self.router_target() {
            return SEPARATE[..4]
                .iter()
                .map(|p| p.name)
                .chain([router])
                .chain(EXPERT_TARGETS)
                .collect();
        }
        self.projections().iter().map(|p| p.name).collect()
    }

    /// What `all-linear` targets: [`Self::target_names`] less the router.
    pub fn all_linear_names(&self) -> Vec<&'static str> {
        self.target_names()
            .into_iter()
            .filter(|n| Some(*n) != self.router_target())
            .collect()
    }
}
