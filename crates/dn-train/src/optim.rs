//! AdamW (PyTorch's update rule, decoupled weight decay) with state that can be saved and restored,
//! global-norm gradient clipping, and the learning-rate schedule.

use candle_core::{DType, Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    /// The reference worker's Adam: betas 0.9/0.95, eps 1e-8, no weight decay.
    fn default() -> Self {
        AdamWConfig {
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

/// First and second moments of every trainable tensor, and the number of updates taken.
pub struct AdamW {
    pub config: AdamWConfig,
    pub m: Vec<Tensor>,
    pub v: Vec<Tensor>,
    pub updates: u64,
}

impl AdamW {
    pub fn new(config: AdamWConfig, params: &[&Var]) -> Result<Self> {
        let zeros = |p: &&Var| p.as_tensor().zeros_like();
        Ok(AdamW {
            m: params
                .iter()
                .map(zeros)
                .collect::<candle_core::Result<_>>()?,
            v: params
                .iter()
                .map(zeros)
                .collect::<candle_core::Result<_>>()?,
            config,
            updates: 0,
        })
    }

    /// One update with learning rate `lr`: `p -= lr * (m_hat / (sqrt(v_hat) + eps) + wd * p)`,
    /// in the order PyTorch's AdamW computes it.
    pub fn step(&mut self, params: &[&Var], grads: &[Tensor], lr: f64) -> Result<()> {
        if params.len() != grads.len() || params.len() != self.m.len() {
            return Err(Error::invalid(
                "optimizer",
                "parameter and gradient counts differ from the optimizer state",
            ));
        }
        self.updates += 1;
        let c = &self.config;
        let t = self.updates as i32;
        let bias1 = 1.0 - c.beta1.powi(t);
        let bias2_sqrt = (1.0 - c.beta2.powi(t)).sqrt();
        for (i, (p, g)) in params.iter().zip(grads).enumerate() {
            let m = ((&self.m[i] * c.beta1)? + (g * (1.0 - c.beta1))?)?;
            let v = ((&self.v[i] * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?;
            let mut value = p.as_tensor().detach();
            if c.weight_decay != 0.0 {
                value = (value * (1.0 - lr * c.weight_decay))?;
            }
            let denom = ((v.sqrt()? / bias2_sqrt)? + c.eps)?;
            let update = ((m.div(&denom))? * (lr / bias1))?;
            p.set(&(value - update)?)?;
            self.m[i] = m;
            self.v[i] = v;
        }
        Ok(())
    }
}

/// Scales `grads` in place so their global L2 norm is at most `max_norm` (as torch's
/// `clip_grad_norm_`: coefficient `max_norm / (norm + 1e-6)`, capped at 1). Returns the norm before, an
/// f64 scalar on the gradients' device: computed there, in f64, tensor by tensor in a fixed order, with
/// nothing read back (the trainer reads it with the loss, once per step).
pub fn clip_grad_norm(grads: &mut [Tensor], max_norm: f64) -> Result<Tensor> {
    let Some(first) = grads.first() else {
        return Err(Error::invalid("optimizer", "no gradients to clip"));
    };
    let mut sum = Tensor::zeros((), DType::F64, first.device())?;
    for g in grads.iter() {
        sum = (sum + g.to_dtype(DType::F64)?.sqr()?.sum_all()?)?;
    }
    let norm = sum.sqrt()?;
    if max_norm > 0.0 {
        // min(1, max_norm / (norm + 1e-6)): exactly 1 when the norm is within the limit.
        let coef = ((&norm + 1e-6)?.recip()? * max_norm)?.minimum(1.0)?;
        for g in grads.iter_mut() {
            *g = g.broadcast_mul(&coef.to_dtype(g.dtype())?)?;
        }
    }
    Ok(norm)
}

/// How the learning rate moves over the run: dn-spec's `lr_scheduler` option.
pub use dn_spec::LrSchedule as Schedule;

/// The rate of optimizer step `step` (0-based) of `total` under `schedule`, after `warmup` linear warmup
/// steps (transformers' `get_*_schedule_with_warmup` formulas).
pub fn scheduled_rate(schedule: Schedule, base: f64, step: u64, total: u64, warmup: u64) -> f64 {
    if step < warmup {
        return base * (step + 1) as f64 / warmup as f64;
    }
    let span = total.saturating_sub(warmup).max(1) as f64;
    let progress = (step - warmup) as f64 / span;
    match schedule {
        Schedule::Constant => base,
        Schedule::Linear => base * (1.0 - progress).max(0.0),
        Schedule::Cosine => base * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn first_adam_step_moves_each_weight_by_lr_against_its_gradient_sign() {
        let p = Var::new(&[1.0f64, -2.0, 3.0], &Device::Cpu).unwrap();
        let mut opt = AdamW::new(AdamWConfig::default(), &[&p]).unwrap();
        let g = Tensor::new(&[0.5f64, -0.25, 0.0], &Device::Cpu).unwrap();
        opt.step(&[&p], &[g], 0.1).unwrap();
        let v = p.as_tensor().to_vec1::<f64>().unwrap();
        assert!(
            (v[0] - 0.9).abs() < 1e-6 && (v[1] + 1.9).abs() < 1e-6 && v[2] == 3.0,
            "{v:?}"
        );
    }

    #[test]
    fn clipping_scales_to_the_max_norm() {
        let mut grads = vec![Tensor::new(&[3.0f64, 4.0], &Device::Cpu).unwrap()];
        let norm = clip_grad_norm(&mut grads, 1.0).unwrap();
        assert_eq!(norm.to_scalar::<f64>().unwrap(), 5.0);
        let v = grads[0].to_vec1::<f64>().unwrap();
        assert!((v[0] - 0.6).abs() < 1e-6 && (v[1] - 0.8).abs() < 1e-6);
    }

    #[test]
    fn schedules() {
        assert_eq!(scheduled_rate(Schedule::Constant, 1.0, 5, 10, 0), 1.0);
        assert_eq!(scheduled_rate(Schedule::Linear, 1.0, 0, 10, 2), 0.5);
        assert_eq!(scheduled_rate(Schedule::Linear, 1.0, 6, 10, 2), 0.5);
        assert!((scheduled_rate(Schedule::Cosine, 1.0, 5, 10, 0) - 0.5).abs() < 1e-12);
    }
}
