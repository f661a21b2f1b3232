//! A sparse block's mixture of experts: the frozen router and fused expert tensors (transformers 5's
//! layout, whatever the checkpoint's), and a LoRA pair per expert on each targeted tensor, held as PEFT's
//! `target_parameters` holds them. Routing itself (softmax, top-k, grouping by expert) is in
//! `crate::routing`, shared by both executors.

use std::sync::{Arc, Mutex};

use candle_core::{DType, Tensor};
use dn_arch::{Experts, ModelConfig};

use super::check_shape;
use crate::error::Result;
use crate::frozen::{Frozen, FrozenBase};
use crate::lora::{LoraConfig, LoraPair};
use crate::quant::{QuantLinear, QuantMatrix};
use crate::weights::BaseModel;

pub struct ExpertMlp {
    pub(crate) spec: Experts,
    /// `[experts, hidden]`.
    pub(crate) router: Frozen,
    /// The router's pair when `lora_target_modules` names it: `A [rank, hidden]`, `B [experts, rank]`.
    pub router_lora: Option<LoraPair>,
    /// `[experts, 2 * intermediate, hidden]`, gate rows first (or interleaved).
    pub(crate) gate_up: FrozenExperts,
    /// `[experts, hidden, intermediate]`.
    pub(crate) down: FrozenExperts,
    /// `A [rank * experts, hidden]`, `B [2 * intermediate, rank * experts]`.
    pub gate_up_lora: Option<LoraPair>,
    /// `A [rank * experts, intermediate]`, `B [hidden, rank * experts]`.
    pub down_lora: Option<LoraPair>,
    /// Qwen2-MoE's shared expert (frozen: PEFT cannot adapt it either).
    pub(crate) shared: Option<SharedExpert>,
    /// gpt-oss's frozen biases: the router's `[experts]`, gate_up's `[experts, 2 * intermediate]` and
    /// down's `[experts, hidden]`.
    pub(crate) biases: Option<[Tensor; 3]>,
    /// Tokens routed to each expert since [`crate::LoraModel::take_router_load`] last read them.
    pub(crate) load: Mutex<Vec<u64>>,
}

/// A shared expert every token goes through: `sigmoid(x g^T) * down(act(gate(x)) * up(x))`.
/// A mixture's fused frozen expert weights `[experts, out, in]`: dense, or kept in their stored
/// quantization (gpt-oss's MXFP4), one expert's rows decoded per product.
pub(crate) enum FrozenExperts {
    Dense(Tensor),
    Quantized(Arc<QuantMatrix>),
}

impl FrozenExperts {
    fn load(base: &BaseModel, name: &str, dims: [usize; 3]) -> Result<Self> {
        if let Some(q) = base.quantized.get(name) {
            if q.dims != dims {
                return Err(crate::error::Error::model(
                    base.source.display().to_string(),
                    format!(
                        "weight {name} has shape {:?}; the config makes it {dims:?}",
                        q.dims
                    ),
                ));
            }
            return Ok(FrozenExperts::Quantized(q.clone()));
        }
        let t = base.get(name)?.detach();
        check_shape(base, name, &t, &dims)?;
        Ok(FrozenExperts::Dense(t))
    }

    pub(crate) fn dense(&self) -> Option<&Tensor> {
        match self {
            FrozenExperts::Dense(t) => Some(t),
            FrozenExperts::Quantized(_) => None,
        }
    }

    pub(crate) fn quantized(&self) -> Option<&QuantMatrix> {
        match self {
            FrozenExperts::Dense(_) => None,
            FrozenExperts::Quantized(q) => Some(q),
        }
    }

    /// Expert `e`'s `[out, in]` weight as a frozen linear.
    pub(crate) fn expert(&self, e: usize, dtype: DType) -> Result<FrozenBase> {
        Ok(match self {
            FrozenExperts::Dense(t) => FrozenBase::Dense(Frozen::new(&t.get(e)?.detach())?),
            FrozenExperts::Quantized(q) => {
                let out = q.dims[1];
                FrozenBase::Quantized(QuantLinear::rows(q.clone(), dtype, e * out, out))
            }
        })
    }
}

pub(crate) struct SharedExpert {
    pub(crate) gate: Frozen,
    pub(crate) up: Frozen,
    pub(crate) down: Frozen,
    /// `shared_expert_gate [1, hidden]`.
    pub(crate) scale: Frozen,
}

/// How one sparse layer's router spread the tokens: tokens per expert (each token counts once per expert
/// it is routed to).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterLoad {
    pub layer: usize,
    pub tokens: Vec<u64>,
}

impl RouterLoad {
    /// The least and most loaded experts' shares of the routed tokens.
    pub fn min_max_share(&self) -> (f64, f64) {
        let total = self.tokens.iter().sum::<u64>().max(1) as f64;
        let min = self.tokens.iter().min().copied().unwrap_or(0) as f64;
        let max = self.tokens.iter().max().copied().unwrap_or(0) as f64;
        (min / total, max / total)
    }
}

impl ExpertMlp {
    /// Block `i`'s experts and, where `lora` targets them, fresh pairs (the router's drawn first, then
    /// gate_up's, down's).
    pub(crate) fn load(
        base: &BaseModel,
        config: &ModelConfig,
        i: usize,
        lora: &LoraConfig,
        rng: &mut rand_chacha::ChaCha8Rng,
        lora_dtype: DType,
    ) -> Result<Self> {
        let spec = config.experts.expect("a sparse block has experts");
        let names = config.expert_names(i);
        let (e, d, f) = (spec.count, config.hidden_size, spec.intermediate_size);
        let get = |name: &str, dims: &[usize]| -> Result<Tensor> {
            let t = base.get(name)?.detach();
            check_shape(base, name, &t, dims)?;
            Ok(t)
        };
        let router = Frozen::new(&get(&names.router, &[e, d])?)?;
        let gate_up = FrozenExperts::load(base, &names.gate_up, [e, 2 * f, d])?;
        let down = FrozenExperts::load(base, &names.down, [e, d, f])?;
        let (on_gate_up, on_down) = (lora.targets("gate_up_proj"), lora.targets("down_proj"));
        // PEFT nests one wrapper per targeted tensor, gate_up_proj innermost: its pairs sit under
        // `experts.base_layer` when down_proj has pairs too.
        let gate_up_module = if on_down {
            format!("{}.base_layer", names.module)
        } else {
            names.module.clone()
        };
        let mut pair = |module: String, shape| {
            LoraPair::init_shaped(module, shape, lora, rng, lora_dtype, &base.device())
        };
        let on_router = config.router_target().is_some_and(|r| lora.targets(r));
        let router_lora = on_router
            .then(|| pair(names.router_module.clone(), (d, e, 1)))
            .transpose()?;
        let gate_up_lora = on_gate_up
            .then(|| pair(gate_up_module, (d, 2 * f, e)))
            .transpose()?;
        let down_lora = on_down
            .then(|| pair(names.module.clone(), (f, d, e)))
            .transpose()?;
        let biases = match &names.biases {
            Some([router, gate_up, down]) => Some([
                get(router, &[e])?,
                get(gate_up, &[e, 2 * f])?,
                get(down, &[e, d])?,
            ]),
            None => None,
        };
        let shared = match (&names.shared, spec.shared_expert) {
            (Some([gate, up, down, scale]), Some(width)) => Some(SharedExpert {
                gate: Frozen::new(&get(gate, &[width, d])?)?,
                up: Frozen::new(&get(up, &[width, d])?)?,
                down: Frozen::new(&get(down, &[d, width])?)?,
                scale: Frozen::new(&get(scale, &[1, d])?)?,
            }),
            _ => None,
        };
        Ok(ExpertMlp {
            spec,
            router,
            router_lora,
            gate_up,
            down,
            gate_up_lora,
            down_lora,
            shared,
            biases,
            load: Mutex::new(vec![0; e]),
        })
    }

    /// Counts a batch's routing (tokens per expert).
    pub(crate) fn record_load(&self, tokens: &[usize]) {
        let mut load = self
            .load
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (total, n) in load.iter_mut().zip(tokens) {
            *total += *n as u64;
        }
    }

    /// The counts so far, reset.
    pub(crate) fn take_load(&self) -> Vec<u64> {
        let mut load = self
            .load
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let taken = load.clone();
        load.iter_mut().for_each(|n| *n = 0);
        taken
    }

    /// The pairs: the router's, gate_up's, down's.
    pub(crate) fn pairs(&self) -> impl Iterator<Item = &LoraPair> {
        self.router_lora
            .iter()
            .chain(&self.gate_up_lora)
            .chain(&self.down_lora)
    }

    /// The router's logits `[n, experts]` for `h [n, hidden]` (its LoRA delta included), before any bias.
    pub(crate) fn router_logits(&self, h: &Tensor, track: bool) -> Result<Tensor> {
        let logits = self.router.forward(h)?;
        match &self.router_lora {
            Some(pair) => Ok((&logits + pair.delta(h, track)?.to_dtype(logits.dtype())?)?),
            None => Ok(logits),
        }
    }
}
