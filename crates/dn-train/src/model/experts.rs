//! A sparse block's mixture of experts: the frozen router and fused expert tensors (transformers 5's
//! layout, whatever the checkpoint's), and a LoRA pair per expert on each targeted tensor, held as PEFT's
//! `target_parameters` holds them. Routing itself (softmax, top-k, grouping by expert) is in
//! `crate::routing`, shared by both executors.

use candle_core::{DType, Tensor};
use dn_arch::{Experts, ModelConfig};

use super::check_shape;
use crate::error::Result;
use crate::frozen::Frozen;
use crate::lora::{LoraConfig, LoraPair};
use crate::weights::BaseModel;

pub struct ExpertMlp {
    pub(crate) spec: Experts,
    /// `[experts, hidden]`.
    pub(crate) router: Frozen,
    /// `[experts, 2 * intermediate, hidden]`, gate rows first.
    pub(crate) gate_up: Tensor,
    /// `[experts, hidden, intermediate]`.
    pub(crate) down: Tensor,
    /// `A [rank * experts, hidden]`, `B [2 * intermediate, rank * experts]`.
    pub gate_up_lora: Option<LoraPair>,
    /// `A [rank * experts, intermediate]`, `B [hidden, rank * experts]`.
    pub down_lora: Option<LoraPair>,
}

impl ExpertMlp {
    /// Block `i`'s experts and, where `lora` targets them, fresh pairs (gate_up's drawn first).
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
        let gate_up = get(&names.gate_up, &[e, 2 * f, d])?;
        let down = get(&names.down, &[e, d, f])?;
        let (on_gate_up, on_down) = (lora.targets("gate_up_proj"), lora.targets("down_proj"));
        // PEFT nests one wrapper per targeted tensor, gate_up_proj innermost: its pairs sit under
        // `experts.base_layer` when down_proj has pairs too.
        let gate_up_module = if on_down {
            format!("{}.base_layer", names.module)
        } else {
            names.module.clone()
        };
        let mut pair = |module: String, shape| {
            LoraPair::init_shaped(module, shape, lora, rng, lora_dtype, gate_up.device())
        };
        let gate_up_lora = on_gate_up
            .then(|| pair(gate_up_module, (d, 2 * f, e)))
            .transpose()?;
        let down_lora = on_down
            .then(|| pair(names.module.clone(), (f, d, e)))
            .transpose()?;
        Ok(ExpertMlp {
            spec,
            router,
            gate_up,
            down,
            gate_up_lora,
            down_lora,
        })
    }

    /// The pairs, gate_up's first.
    pub(crate) fn pairs(&self) -> impl Iterator<Item = &LoraPair> {
        self.gate_up_lora.iter().chain(&self.down_lora)
    }
}
