//! Text generation from a base model and its LoRA adapter (unmerged): greedy or sampled (temperature,
//! top-k, top-p, seeded), stopping at an end-of-turn id or after `max_tokens`. On the CPU engine every
//! sequence keeps a cache of keys and values, so each new token costs one row per block and the prompts
//! of a batch are prefilled together; elsewhere (the candle graph: CUDA, half precision) each step
//! recomputes the sequence.

use candle_core::DType;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::cpu::decode::{KvCache, extend};
use crate::error::{Error, Result};
use crate::kernels::Real;
use crate::loss::{Sequence, logits_at};
use crate::model::{Executor, LoraModel};

/// How tokens are chosen and when generation ends.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingOptions {
    pub max_tokens: usize,
    /// 0: greedy (the most likely token, the first of equals).
    pub temperature: f64,
    /// Only the `k` most likely tokens are drawn from.
    pub top_k: Option<usize>,
    /// Only the most likely tokens whose probabilities sum to `p` are drawn from.
    pub top_p: Option<f64>,
    /// Sequence `i` draws from a generator seeded with `seed + i`.
    pub seed: u64,
    /// Ids that end a sequence (included in its tokens).
    pub stop: Vec<u32>,
}

impl SamplingOptions {
    /// Greedy, at most `max_tokens`, ending at `stop`.
    pub fn greedy(max_tokens: usize, stop: Vec<u32>) -> Self {
        SamplingOptions {
            max_tokens,
            temperature: 0.0,
            top_k: None,
            top_p: None,
            seed: 0,
            stop,
        }
    }

    pub fn validate(&self) -> Result<()> {
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return Err(Error::invalid("temperature", "must be 0 or more"));
        }
        if self.top_k == Some(0) {
            return Err(Error::invalid("top_k", "must be at least 1"));
        }
        if let Some(p) = self.top_p
            && !(p > 0.0 && p <= 1.0)
        {
            return Err(Error::invalid("top_p", "must be in (0, 1]"));
        }
        Ok(())
    }
}

/// Why a sequence ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// It produced a stop id.
    Stop,
    /// It reached `max_tokens`.
    Length,
    /// The caller stopped generation (`on_token` returned false).
    Interrupted,
}

impl Finish {
    pub fn name(self) -> &'static str {
        match self {
            Finish::Stop => "stop",
            Finish::Length => "length",
            Finish::Interrupted => "interrupted",
        }
    }
}

/// One prompt's completion.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    pub tokens: Vec<u32>,
    pub finish: Finish,
}

/// Where the next logits come from.
enum Backend<T> {
    /// The CPU engine with a cache per sequence.
    Cached(Vec<KvCache<T>>),
    /// The candle graph over each whole sequence.
    Recompute,
}

/// Logits of the last token of each of `active` sequences after `new` more tokens each.
fn step<T: Real>(
    model: &LoraModel,
    backend: &mut Backend<T>,
    sequences: &[Vec<u32>],
    active: &[usize],
    new: &[&[u32]],
) -> Result<Vec<Vec<f32>>> {
    match backend {
        Backend::Cached(caches) => {
            // Past longrope's switch the frequencies change: like transformers' Phi-3, a sequence that
            // crosses it drops its cache and is computed again whole with the long factors.
            let switch = model
                .config
                .ropes
                .iter()
                .filter_map(|r| r.switch_length())
                .min();
            let mut selected: Vec<&mut KvCache<T>> = Vec::with_capacity(active.len());
            let mut tokens: Vec<&[u32]> = Vec::with_capacity(active.len());
            // `active` is in ascending order.
            let mut wanted = active.iter().zip(new).peekable();
            for (i, cache) in caches.iter_mut().enumerate() {
                let Some((_, &fresh)) = wanted.next_if(|(a, _)| **a == i) else {
                    continue;
                };
                let before = cache.len();
                if switch.is_some_and(|s| before > 0 && before <= s && before + fresh.len() > s) {
                    *cache = KvCache::new(model.num_blocks());
                    tokens.push(&sequences[i]);
                } else {
                    tokens.push(fresh);
                }
                selected.push(cache);
            }
            extend(model, &mut selected, &tokens)
        }
        Backend::Recompute => active
            .iter()
            .map(|&i| {
                let ids = &sequences[i];
                let mask = vec![0u8; ids.len()];
                let sequence = Sequence {
                    input_ids: ids,
                    loss_mask: &mask,
                };
                let last = ids.len() as u32 - 1;
                let logits = logits_at(model, &[sequence], &[last])?;
                Ok(logits.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?)
            })
            .collect(),
    }
}

/// Completes each prompt; `on_token(i, token)` sees every token of sequence `i` as it is chosen, and
/// ends all generation by returning false (the unfinished sequences end [`Finish::Interrupted`]).
pub fn generate(
    model: &LoraModel,
    prompts: &[Vec<u32>],
    options: &SamplingOptions,
    on_token: &mut dyn FnMut(usize, u32) -> bool,
) -> Result<Vec<Completion>> {
    options.validate()?;
    if let Some(i) = prompts.iter().position(|p| p.is_empty()) {
        return Err(Error::invalid("prompt", format!("prompt {i} has no token")));
    }
    let vocab = model.lm_head().out_features();
    if let Some(id) = prompts.iter().flatten().find(|&&id| id as usize >= vocab) {
        return Err(Error::invalid(
            "prompt",
            format!("token id {id} is outside the vocabulary ({vocab})"),
        ));
    }
    match (model.executor(), model.dtype()) {
        (Executor::CpuEngine, DType::F64) => run::<f64>(model, prompts, options, on_token, true),
        (Executor::CpuEngine, _) => run::<f32>(model, prompts, options, on_token, true),
        (Executor::Graph, _) => run::<f32>(model, prompts, options, on_token, false),
    }
}

fn run<T: Real>(
    model: &LoraModel,
    prompts: &[Vec<u32>],
    options: &SamplingOptions,
    on_token: &mut dyn FnMut(usize, u32) -> bool,
    cached: bool,
) -> Result<Vec<Completion>> {
    let mut backend: Backend<T> = if cached {
        Backend::Cached(
            (0..prompts.len())
                .map(|_| KvCache::new(model.num_blocks()))
                .collect(),
        )
    } else {
        Backend::Recompute
    };
    let mut sequences = prompts.to_vec();
    let mut rngs: Vec<ChaCha8Rng> = (0..prompts.len())
        .map(|i| crate::lora::seeded_rng(options.seed.wrapping_add(i as u64)))
        .collect();
    let mut completions: Vec<Completion> = prompts
        .iter()
        .map(|_| Completion {
            tokens: Vec::new(),
            finish: Finish::Length,
        })
        .collect();
    let mut active: Vec<usize> = (0..prompts.len()).collect();
    let new: Vec<&[u32]> = prompts.iter().map(Vec::as_slice).collect();
    let mut logits = step(model, &mut backend, &sequences, &active, &new)?;
    for _ in 0..options.max_tokens {
        let mut chosen = Vec::with_capacity(active.len());
        let mut go_on = true;
        for (&i, row) in active.iter().zip(&logits) {
            let token = pick(row, options, &mut rngs[i]);
            completions[i].tokens.push(token);
            sequences[i].push(token);
            go_on &= on_token(i, token);
            chosen.push((i, token));
        }
        // A sequence ends at a stop id or `max_tokens` (its finish stays `Length`); the others go on,
        // or are interrupted when `on_token` said so.
        active.clear();
        for (i, token) in chosen {
            if options.stop.contains(&token) {
                completions[i].finish = Finish::Stop;
            } else if completions[i].tokens.len() < options.max_tokens {
                if go_on {
                    active.push(i);
                } else {
                    completions[i].finish = Finish::Interrupted;
                }
            }
        }
        if active.is_empty() {
            break;
        }
        let new: Vec<[u32; 1]> = active
            .iter()
            .map(|&i| [*sequences[i].last().unwrap()])
            .collect();
        let new: Vec<&[u32]> = new.iter().map(|t| t.as_slice()).collect();
        logits = step(model, &mut backend, &sequences, &active, &new)?;
    }
    Ok(completions)
}

/// The next token from one row of logits: greedy at temperature 0, else drawn after temperature, top-k
/// and top-p, in that order (as transformers' `generate` applies them).
pub fn pick(logits: &[f32], options: &SamplingOptions, rng: &mut ChaCha8Rng) -> u32 {
    if options.temperature == 0.0 {
        let mut best = 0;
        for (i, &l) in logits.iter().enumerate() {
            if l > logits[best] {
                best = i;
            }
        }
        return best as u32;
    }
    let inv = 1.0 / options.temperature as f32;
    let mut order: Vec<u32> = (0..logits.len() as u32).collect();
    // Only top-k and top-p need the tokens by probability.
    if options.top_k.is_some() || options.top_p.is_some() {
        order.sort_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]));
        let keep = options.top_k.unwrap_or(order.len()).min(order.len());
        order.truncate(keep);
    }
    let max = order
        .iter()
        .map(|&i| logits[i as usize])
        .fold(f32::NEG_INFINITY, f32::max)
        * inv;
    let mut probs: Vec<f64> = order
        .iter()
        .map(|&i| ((logits[i as usize] * inv - max) as f64).exp())
        .collect();
    let total: f64 = probs.iter().sum();
    probs.iter_mut().for_each(|p| *p /= total);
    if let Some(top_p) = options.top_p {
        // The smallest prefix whose mass reaches top_p (at least one token).
        let mut mass = 0.0;
        let mut cut = probs.len();
        for (i, p) in probs.iter().enumerate() {
            mass += p;
            if mass >= top_p {
                cut = i + 1;
                break;
            }
        }
        probs.truncate(cut);
        order.truncate(cut);
    }
    let total: f64 = probs.iter().sum();
    let mut draw = rng.random::<f64>() * total;
    for (i, p) in probs.iter().enumerate() {
        draw -= p;
        if draw <= 0.0 {
            return order[i];
        }
    }
    *order.last().expect("at least one token")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(temperature: f64, top_k: Option<usize>, top_p: Option<f64>) -> SamplingOptions {
        SamplingOptions {
            temperature,
            top_k,
            top_p,
            ..SamplingOptions::greedy(1, vec![])
        }
    }

    #[test]
    fn greedy_takes_the_first_of_the_best() {
        let mut rng = crate::lora::seeded_rng(0);
        let logits = vec![0.5, 2.0, -1.0, 2.0];
        assert_eq!(pick(&logits, &options(0.0, None, None), &mut rng), 1);
    }

    #[test]
    fn top_k_and_top_p_keep_only_the_likely_tokens() {
        let mut rng = crate::lora::seeded_rng(7);
        let logits = vec![3.0, 2.9, -5.0, -6.0, 0.0];
        for _ in 0..200 {
            let t = pick(&logits, &options(1.0, Some(2), None), &mut rng);
            assert!(t == 0 || t == 1, "{t}");
            // Token 0 alone holds about half of the mass, 0 and 1 together ~97%.
            let t = pick(&logits, &options(1.0, None, Some(0.4)), &mut rng);
            assert_eq!(t, 0);
        }
        // A high temperature flattens: every token shows up.
        let mut seen = [false; 5];
        for _ in 0..2000 {
            seen[pick(&logits, &options(100.0, None, None), &mut rng) as usize] = true;
        }
        assert!(seen.iter().all(|s| *s), "{seen:?}");
    }

    #[test]
    fn bad_options_are_refused_by_name() {
        let e = options(-1.0, None, None).validate().unwrap_err();
        assert!(e.to_string().contains("temperature"), "{e}");
        let e = options(1.0, Some(0), None).validate().unwrap_err();
        assert!(e.to_string().contains("top_k"), "{e}");
        let e = options(1.0, None, Some(1.5)).validate().unwrap_err();
        assert!(e.to_string().contains("top_p"), "{e}");
    }
}
