//! LoRA adapters: which modules, rank, alpha, PEFT's initialisation from our own seeded RNG, and the
//! PEFT tensor names they are saved under.

use candle_core::{DType, Device, Tensor, Var};
use rand::Rng;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use dn_arch::{EXPERT_TARGETS, ModelConfig, ROUTER_TARGETS};

pub use dn_spec::{ALL_LINEAR, LoraTargets};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraConfig {
    pub rank: usize,
    pub alpha: f64,
    /// `all-linear` or short module names (`q_proj`, `qkv_proj`, ...); after [`LoraConfig::resolve`],
    /// the model's own names in execution order.
    pub target_modules: LoraTargets,
}

impl LoraConfig {
    /// Rank `rank`, alpha `alpha`, every projection of the family.
    pub fn new(rank: usize, alpha: f64) -> Self {
        LoraConfig {
            rank,
            alpha,
            target_modules: LoraTargets::AllLinear,
        }
    }

    pub fn scale(&self) -> f64 {
        self.alpha / self.rank as f64
    }

    pub fn validate(&self) -> Result<()> {
        if self.rank == 0 {
            return Err(Error::invalid("lora_rank", "must be at least 1"));
        }
        if self.alpha.is_nan() || self.alpha <= 0.0 {
            return Err(Error::invalid("lora_alpha", "must be positive"));
        }
        if self.target_modules == LoraTargets::Modules(Vec::new()) {
            return Err(Error::invalid(
                "lora_target_modules",
                "must name at least one module",
            ));
        }
        Ok(())
    }

    /// This configuration for a model of `config`'s family: `all-linear` expanded to its projections, and
    /// any name the family does not have refused (naming the ones it has).
    pub fn resolve(&self, config: &ModelConfig) -> Result<LoraConfig> {
        self.validate()?;
        let names = config.target_names();
        let mut targets: Vec<String> = Vec::new();
        let asked: Vec<String> = match &self.target_modules {
            LoraTargets::AllLinear => config
                .all_linear_names()
                .iter()
                .map(|n| n.to_string())
                .collect(),
            LoraTargets::Modules(modules) => modules.clone(),
        };
        for m in asked {
            if names.contains(&m.as_str()) {
                targets.push(m);
            } else {
                return Err(Error::invalid(
                    "lora_target_modules",
                    format!(
                        "{} models have no {m:?} projection (they have {})",
                        config.family,
                        names.join(", ")
                    ),
                ));
            }
        }
        // Execution order, once each.
        let targets = names
            .iter()
            .filter(|n| targets.iter().any(|t| t == *n))
            .map(|n| n.to_string())
            .collect();
        Ok(LoraConfig {
            target_modules: LoraTargets::Modules(targets),
            ..self.clone()
        })
    }

    /// Whether `module` gets a pair (of a resolved configuration).
    pub fn targets(&self, module: &str) -> bool {
        self.target_modules.as_names().contains(&module)
    }

    /// `target_modules` as PEFT should read it for `config`: the names (the router and the experts'
    /// tensors left to [`Self::peft_target_parameters`]), or, for the text model inside a multimodal
    /// checkpoint, a pattern that matches its blocks only (not the vision tower's).
    pub fn peft_target_modules(&self, config: &ModelConfig) -> serde_json::Value {
        let names: Vec<&str> = self
            .target_modules
            .as_names()
            .into_iter()
            .filter(|n| {
                config.experts.is_none()
                    || !(EXPERT_TARGETS.contains(n) || ROUTER_TARGETS.contains(n))
            })
            .collect();
        if config.prefix == "model." {
            return serde_json::json!(names);
        }
        let prefix = config.prefix.replace('.', r"\.");
        serde_json::json!(format!(
            r"{prefix}layers\.\d+\.(self_attn|mlp)\.({})",
            names.join("|")
        ))
    }

    /// PEFT's `target_parameters`: the router's weight when targeted (one pair on `[experts, hidden]`),
    /// and the experts' fused tensors that get a pair per expert (`null` in a model without experts).
    pub fn peft_target_parameters(&self, config: &ModelConfig) -> serde_json::Value {
        let Some(router) = config.router_target() else {
            return serde_json::Value::Null;
        };
        let router = self.targets(router).then(|| format!("mlp.{router}.weight"));
        let names: Vec<String> = router
            .into_iter()
            .chain(
                EXPERT_TARGETS
                    .iter()
                    .filter(|n| self.targets(n))
                    .map(|n| format!("mlp.experts.{n}")),
            )
            .collect();
        serde_json::json!(names)
    }
}

/// One LoRA pair on a frozen projection: `y = x W^T + scale * (x A^T) B^T`; or, on a mixture of experts'
/// fused tensor, one pair per expert held as PEFT's `target_parameters` holds them: `A [rank * experts, in]`
/// (expert `e`'s rows `e * rank..`), `B [out, rank * experts]` (expert `e`'s columns `k * experts + e`).
pub struct LoraPair {
    /// PEFT module path, e.g. `model.layers.0.self_attn.q_proj` (`model.layers.0.mlp.experts` for experts).
    pub module: String,
    pub a: Var,
    pub b: Var,
    pub scale: f64,
    /// 1 on a projection; the number of experts on a fused expert tensor.
    pub experts: usize,
}

impl LoraPair {
    /// PEFT's default init (A ~ U(-1/sqrt(in), 1/sqrt(in)), kaiming-uniform with a = sqrt(5); B = 0) of
    /// the pairs of `experts` projections of `in_features -> out_features` each (1 on a plain
    /// projection): the same bound over the whole `A [rank * experts, in]`.
    pub fn init_shaped(
        module: String,
        (fan_in, fan_out, experts): (usize, usize, usize),
        config: &LoraConfig,
        rng: &mut ChaCha8Rng,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let rows = config.rank * experts;
        let bound = 1.0 / (fan_in as f64).sqrt();
        let values: Vec<f64> = (0..rows * fan_in)
            .map(|_| rng.random_range(-bound..bound))
            .collect();
        let a = Tensor::from_vec(values, (rows, fan_in), device)?.to_dtype(dtype)?;
        let b = Tensor::zeros((fan_out, rows), dtype, device)?;
        Ok(LoraPair {
            module,
            a: Var::from_tensor(&a)?,
            b: Var::from_tensor(&b)?,
            scale: config.scale(),
            experts,
        })
    }

    /// The rank of each pair.
    pub fn rank(&self) -> usize {
        self.a.as_tensor().dims()[0] / self.experts
    }

    /// The dtype of A and B (f32 under a half-precision base, as PEFT keeps them).
    pub fn dtype(&self) -> DType {
        self.a.as_tensor().dtype()
    }

    /// `scale * (x A^T) B^T` for `x [n, in]`, computed and returned in the adapter's dtype (`x` is cast
    /// to it first when it is not: the caller shares one cast between the projections of one input);
    /// `track` false builds no graph (evaluation).
    pub fn delta(&self, x: &Tensor, track: bool) -> Result<Tensor> {
        let (a, b) = if track {
            (self.a.as_tensor().clone(), self.b.as_tensor().clone())
        } else {
            (self.a.as_tensor().detach(), self.b.as_tensor().detach())
        };
        // The scale goes on B (out x r), not on the product (tokens x out): one activation-sized tensor
        // fewer kept for the backward.
        let down = x.to_dtype(a.dtype())?.matmul(&a.t()?)?;
        Ok(down.matmul(&(b * self.scale)?.t()?)?)
    }

    pub fn peft_a_name(&self) -> String {
        format!("base_model.model.{}.lora_A.weight", self.module)
    }

    pub fn peft_b_name(&self) -> String {
        format!("base_model.model.{}.lora_B.weight", self.module)
    }
}

/// The RNG LoRA init and data order draw from (ChaCha8: the same stream on every platform).
pub fn seeded_rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}
