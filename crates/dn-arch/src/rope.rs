//! Rotary position embeddings as transformers computes them: the parameters read from either layout of
//! config.json (transformers 5's `rope_parameters`, possibly one dict per layer type, or the older top-level
//! `rope_theta` / `rope_scaling` / `partial_rotary_factor`), and the inverse frequencies and cos/sin factor
//! of each supported rope type (`default`, `linear`, `llama3`, `yarn`, `longrope`), in f32 as transformers
//! computes them.

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::json::{Fields, f64_list};

/// The rope types dn computes; others are refused by name.
pub const ROPE_TYPES: [&str; 5] = ["default", "linear", "llama3", "yarn", "longrope"];

#[derive(Debug, Clone, PartialEq)]
pub enum RopeKind {
    Default,
    /// Positions divided by `factor` (inverse frequencies divided by it).
    Linear {
        factor: f64,
    },
    /// Llama 3.1's frequency-dependent scaling.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: f64,
    },
    /// YaRN: interpolation blended with extrapolation by a ramp over the dimensions, and a cos/sin factor.
    Yarn {
        factor: f64,
        attention_factor: f64,
        beta_fast: f64,
        beta_slow: f64,
        original_max_position_embeddings: f64,
        truncate: bool,
    },
    /// Phi-3.5's LongRoPE: per-dimension factors, the long ones for examples longer than the original
    /// context, and a cos/sin factor.
    LongRope {
        short_factor: Vec<f64>,
        long_factor: Vec<f64>,
        attention_factor: f64,
        original_max_position_embeddings: usize,
    },
}

/// One rope setting (a model has one, or one per layer type).
#[derive(Debug, Clone, PartialEq)]
pub struct Rope {
    pub theta: f64,
    pub kind: RopeKind,
    /// Leading dimensions of each head that rotate (`head_dim * partial_rotary_factor`); the rest pass.
    pub rotary_dim: usize,
}

/// What rotates the tokens of one example.
#[derive(Debug, Clone, PartialEq)]
pub struct Frequencies {
    /// `rotary_dim / 2` inverse frequencies.
    pub inv_freq: Vec<f32>,
    /// cos and sin are multiplied by it (1 but for yarn and longrope).
    pub attention_factor: f32,
}

impl Rope {
    /// Whether the frequencies depend on the example's length (longrope).
    pub fn depends_on_length(&self) -> bool {
        matches!(self.kind, RopeKind::LongRope { .. })
    }

    /// The length past which the frequencies change (longrope's original context), if they do.
    pub fn switch_length(&self) -> Option<usize> {
        match &self.kind {
            RopeKind::LongRope {
                original_max_position_embeddings,
                ..
            } => Some(*original_max_position_embeddings),
            _ => None,
        }
    }

    /// The frequencies for an example of `len` tokens (transformers picks longrope's long factors when the
    /// largest position + 1 exceeds the original context).
    pub fn frequencies(&self, len: usize) -> Frequencies {
        let dim = self.rotary_dim;
        let base = self.theta as f32;
        let pos_freqs: Vec<f32> = (0..dim)
            .step_by(2)
            .map(|i| base.powf(i as f32 / dim as f32))
            .collect();
        let plain = || pos_freqs.iter().map(|p| 1.0 / p);
        match &self.kind {
            RopeKind::Default => Frequencies {
                inv_freq: plain().collect(),
                attention_factor: 1.0,
            },
            RopeKind::Linear { factor } => Frequencies {
                inv_freq: plain().map(|f| f / *factor as f32).collect(),
                attention_factor: 1.0,
            },
            RopeKind::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            } => {
                let (factor, low, high) = (
                    *factor as f32,
                    *low_freq_factor as f32,
                    *high_freq_factor as f32,
                );
                let old = *original_max_position_embeddings as f32;
                let (low_wavelen, high_wavelen) = (old / low, old / high);
                let inv_freq = plain()
                    .map(|f| {
                        let wavelen = 2.0 * std::f32::consts::PI / f;
                        if wavelen < high_wavelen {
                            f
                        } else if wavelen > low_wavelen {
                            f / factor
                        } else {
                            let smooth = (old / wavelen - low) / (high - low);
                            (1.0 - smooth) * f / factor + smooth * f
                        }
                    })
                    .collect();
                Frequencies {
                    inv_freq,
                    attention_factor: 1.0,
                }
            }
            RopeKind::Yarn {
                factor,
                attention_factor,
                beta_fast,
                beta_slow,
                original_max_position_embeddings,
                truncate,
            } => {
                let correction_dim = |rotations: f64| {
                    dim as f64
                        * (original_max_position_embeddings
                            / (rotations * 2.0 * std::f64::consts::PI))
                            .ln()
                        / (2.0 * self.theta.ln())
                };
                let (mut low, mut high) = (correction_dim(*beta_fast), correction_dim(*beta_slow));
                if *truncate {
                    low = low.floor();
                    high = high.ceil();
                }
                let (low, mut high) = (low.max(0.0), high.min(dim as f64 - 1.0));
                if low == high {
                    high += 0.001;
                }
                let inv_freq = pos_freqs
                    .iter()
                    .enumerate()
                    .map(|(i, p)| {
                        let ramp =
                            ((i as f32 - low as f32) / (high as f32 - low as f32)).clamp(0.0, 1.0);
                        let extrapolation = 1.0 - ramp;
                        let interpolation = 1.0 / (*factor as f32 * p);
                        interpolation * (1.0 - extrapolation) + (1.0 / p) * extrapolation
                    })
                    .collect();
                Frequencies {
                    inv_freq,
                    attention_factor: *attention_factor as f32,
                }
            }
            RopeKind::LongRope {
                short_factor,
                long_factor,
                attention_factor,
                original_max_position_embeddings,
            } => {
                let factors = if len > *original_max_position_embeddings {
                    long_factor
                } else {
                    short_factor
                };
                let inv_freq = factors
                    .iter()
                    .zip(&pos_freqs)
                    .map(|(e, p)| 1.0 / (*e as f32 * p))
                    .collect();
                Frequencies {
                    inv_freq,
                    attention_factor: *attention_factor as f32,
                }
            }
        }
    }
}

/// What a rope dict is read with besides its own keys.
pub(crate) struct RopeDefaults {
    pub theta: f64,
    pub partial_rotary_factor: Option<f64>,
    /// A top-level `original_max_position_embeddings` that overrides the dict's (transformers gives it
    /// priority for a single, un-nested dict).
    pub original_override: Option<usize>,
    pub max_position_embeddings: usize,
    pub head_dim: usize,
    /// Phi-3 configs call LongRoPE `su` or `yarn`.
    pub phi3_names: bool,
}

/// One rope dict (`rope_parameters`, one of its per-layer-type dicts, or a legacy `rope_scaling`);
/// `key` names it in errors.
pub(crate) fn read_rope(
    dict: &Map<String, Value>,
    d: &RopeDefaults,
    key: &str,
    file: &str,
) -> Result<Rope> {
    let f = Fields::new(dict, key, file);
    let mut kind_name = f
        .str("rope_type")?
        .or(f.str("type")?)
        .unwrap_or("default")
        .to_owned();
    if d.phi3_names && (kind_name == "su" || kind_name == "yarn") {
        kind_name = "longrope".into();
    }
    let theta = f.f64("rope_theta")?.unwrap_or(d.theta);
    if !(theta.is_finite() && theta > 1.0) {
        return Err(Error::new(
            file,
            format!("{key}.rope_theta must be greater than 1 (got {theta})"),
        ));
    }
    let fraction = f
        .f64("partial_rotary_factor")?
        .or(d.partial_rotary_factor)
        .unwrap_or(1.0);
    let rotary_dim = (d.head_dim as f64 * fraction) as usize;
    if !(fraction > 0.0 && fraction <= 1.0) || rotary_dim == 0 || !rotary_dim.is_multiple_of(2) {
        return Err(Error::new(
            file,
            format!(
                "{key}.partial_rotary_factor {fraction} gives {rotary_dim} rotary dimensions of {}; an even number above 0 is needed",
                d.head_dim
            ),
        ));
    }
    let original = || -> Result<usize> {
        Ok(d.original_override
            .or(f.usize("original_max_position_embeddings")?)
            .unwrap_or(d.max_position_embeddings))
    };
    let factor = |required: bool| -> Result<Option<f64>> {
        match f.f64("factor")? {
            Some(v) if v.is_finite() && v > 0.0 => Ok(Some(v)),
            Some(v) => Err(Error::new(
                file,
                format!("{key}.factor must be positive (got {v})"),
            )),
            None if required => Err(Error::new(
                file,
                format!("{key}.factor is missing (rope type {kind_name})"),
            )),
            None => Ok(None),
        }
    };
    let kind = match kind_name.as_str() {
        "default" => RopeKind::Default,
        "linear" => RopeKind::Linear {
            factor: factor(true)?.unwrap_or(1.0),
        },
        "llama3" => RopeKind::Llama3 {
            factor: factor(true)?.unwrap_or(1.0),
            low_freq_factor: f.required_f64("low_freq_factor")?,
            high_freq_factor: f.required_f64("high_freq_factor")?,
            original_max_position_embeddings: original()? as f64,
        },
        "yarn" => {
            let original = original()? as f64;
            let factor = factor(false)?.unwrap_or(d.max_position_embeddings as f64 / original);
            let mscale = |scale: f64, m: f64| {
                if scale <= 1.0 {
                    1.0
                } else {
                    0.1 * m * scale.ln() + 1.0
                }
            };
            let attention_factor = match (
                f.f64("attention_factor")?,
                f.f64("mscale")?,
                f.f64("mscale_all_dim")?,
            ) {
                (Some(a), _, _) => a,
                (None, Some(m), Some(all)) if m != 0.0 && all != 0.0 => {
                    mscale(factor, m) / mscale(factor, all)
                }
                _ => mscale(factor, 1.0),
            };
            RopeKind::Yarn {
                factor,
                attention_factor,
                beta_fast: f.f64("beta_fast")?.filter(|v| *v != 0.0).unwrap_or(32.0),
                beta_slow: f.f64("beta_slow")?.filter(|v| *v != 0.0).unwrap_or(1.0),
                original_max_position_embeddings: original,
                truncate: f.bool("truncate")?.unwrap_or(true),
            }
        }
        "longrope" => {
            let original = original()?;
            let half = rotary_dim / 2;
            let list = |name: &str| -> Result<Vec<f64>> {
                let values = f64_list(dict.get(name), &format!("{key}.{name}"), file)?;
                if values.len() != half {
                    return Err(Error::new(
                        file,
                        format!(
                            "{key}.{name} has {} values; {half} are needed (rotary dimensions / 2)",
                            values.len()
                        ),
                    ));
                }
                Ok(values)
            };
            let factor =
                factor(false)?.unwrap_or(d.max_position_embeddings as f64 / original as f64);
            let attention_factor = match f.f64("attention_factor")? {
                Some(a) => a,
                None if factor <= 1.0 => 1.0,
                None => (1.0 + factor.ln() / (original as f64).ln()).sqrt(),
            };
            RopeKind::LongRope {
                short_factor: list("short_factor")?,
                long_factor: list("long_factor")?,
                attention_factor,
                original_max_position_embeddings: original,
            }
        }
        other => {
            return Err(Error::new(
                file,
                format!(
                    "{key}: rope type {other:?} is not supported (supported: {})",
                    ROPE_TYPES.join(", ")
                ),
            ));
        }
    };
    Ok(Rope {
        theta,
        kind,
        rotary_dim,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn defaults() -> RopeDefaults {
        RopeDefaults {
            theta: 10000.0,
            partial_rotary_factor: None,
            original_override: None,
            max_position_embeddings: 64,
            head_dim: 16,
            phi3_names: false,
        }
    }

    fn read(v: Value) -> Result<Rope> {
        read_rope(
            v.as_object().unwrap(),
            &defaults(),
            "rope_parameters",
            "c.json",
        )
    }

    #[test]
    fn default_rope_matches_the_closed_form() {
        let r = read(json!({"rope_type": "default", "rope_theta": 10000.0})).unwrap();
        let f = r.frequencies(10);
        assert_eq!(f.inv_freq.len(), 8);
        assert_eq!(f.inv_freq[0], 1.0);
        assert!((f.inv_freq[1] - 10000f32.powf(-2.0 / 16.0)).abs() < 1e-7);
    }

    #[test]
    fn linear_divides_and_partial_rotary_shrinks() {
        let r = read(json!({"rope_type": "linear", "factor": 4.0, "partial_rotary_factor": 0.5}))
            .unwrap();
        assert_eq!(r.rotary_dim, 8);
        assert_eq!(
            r.frequencies(1).inv_freq,
            vec![0.25, 0.025, 0.0025, 0.00025]
        );
    }

    #[test]
    fn longrope_switches_factors_past_the_original_context() {
        let r = read(
            json!({"rope_type": "longrope", "short_factor": vec![1.0; 8],
            "long_factor": vec![2.0; 8], "original_max_position_embeddings": 16}),
        )
        .unwrap();
        let (short, long) = (r.frequencies(16), r.frequencies(17));
        assert_eq!(short.inv_freq[0], 1.0);
        assert_eq!(long.inv_freq[0], 0.5);
        // factor 64 / 16 = 4: sqrt(1 + ln 4 / ln 16) = sqrt(1.5)
        assert!((short.attention_factor - 1.5f32.sqrt()).abs() < 1e-6);
    }

    #[test]
    fn unknown_types_and_bad_lists_are_refused_by_name() {
        let e = read(json!({"rope_type": "dynamic", "factor": 2.0}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("dynamic") && e.contains("c.json"), "{e}");
        let e = read(json!({"rope_type": "longrope", "short_factor": [1.0], "long_factor": [1.0]}))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("short_factor") && e.contains("8 are needed"),
            "{e}"
        );
        let e = read(json!({"rope_type": "llama3", "factor": 8.0}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("low_freq_factor"), "{e}");
    }

    #[test]
    fn yarn_blends_and_scales() {
        let r = read(
            json!({"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16}),
        )
        .unwrap();
        let f = r.frequencies(5);
        let plain = read(json!({})).unwrap().frequencies(5);
        // The highest frequency extrapolates (unchanged), the lowest interpolates (divided by 4).
        assert_eq!(f.inv_freq[0], plain.inv_freq[0]);
        assert!((f.inv_freq[7] - plain.inv_freq[7] / 4.0).abs() < 1e-9);
        assert!((f.attention_factor - (0.1 * 4f32.ln() + 1.0)).abs() < 1e-6);
    }
}
