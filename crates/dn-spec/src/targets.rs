//! Which projections get a LoRA pair (`lora_target_modules`): PEFT's `all-linear`, or short projection
//! names. Which names a model has is the model's question (dn-train resolves them per family); here a
//! name must be one some family has.

use crate::error::Error;

/// PEFT's name for every linear projection of the blocks, whatever the family calls them (the default).
pub const ALL_LINEAR: &str = "all-linear";

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum LoraTargets {
    /// Every projection of the model's family.
    #[default]
    AllLinear,
    /// These projections (PEFT's short names), once each, in the order given; never empty.
    Modules(Vec<String>),
}

impl LoraTargets {
    pub const FIELD: &'static str = "lora_target_modules";

    /// Every name the option takes: `all-linear` and each projection name of any family.
    pub fn names() -> Vec<&'static str> {
        std::iter::once(ALL_LINEAR)
            .chain(dn_arch::ALL_PROJECTION_NAMES)
            .collect()
    }

    /// A list as given: at least one name, each known (an error names its index); `all-linear` anywhere
    /// wins; duplicates are dropped.
    pub fn parse<S: AsRef<str>>(list: &[S]) -> Result<Self, Error> {
        if list.is_empty() {
            return Err(Error::new(Self::FIELD, "must name at least one module"));
        }
        let names = Self::names();
        let mut modules: Vec<String> = Vec::new();
        for (i, name) in list.iter().enumerate() {
            let name = name.as_ref();
            if !names.contains(&name) {
                return Err(Error::unknown(
                    format!("{}[{i}]", Self::FIELD),
                    name,
                    &names,
                ));
            }
            if !modules.iter().any(|m| m == name) {
                modules.push(name.to_owned());
            }
        }
        if modules.iter().any(|m| m == ALL_LINEAR) {
            if let Some(router) = modules
                .iter()
                .find(|m| dn_arch::ROUTER_TARGETS.contains(&m.as_str()))
            {
                return Err(Error::new(
                    Self::FIELD,
                    format!(
                        "all-linear never includes the router: to adapt {router:?} too, list every module \
                         (e.g. q_proj, k_proj, v_proj, o_proj, {router}, gate_up_proj, down_proj)"
                    ),
                ));
            }
            Ok(LoraTargets::AllLinear)
        } else {
            Ok(LoraTargets::Modules(modules))
        }
    }

    /// The names as stored and shown (`["all-linear"]` or the modules).
    pub fn as_names(&self) -> Vec<&str> {
        match self {
            LoraTargets::AllLinear => vec![ALL_LINEAR],
            LoraTargets::Modules(modules) => modules.iter().map(String::as_str).collect(),
        }
    }
}

impl serde::Serialize for LoraTargets {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.as_names())
    }
}

impl<'de> serde::Deserialize<'de> for LoraTargets {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let list = Vec::<String>::deserialize(deserializer)?;
        Self::parse(&list).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lists_once_each_with_all_linear_winning() {
        assert_eq!(
            LoraTargets::parse(&["q_proj", "v_proj", "q_proj"]).unwrap(),
            LoraTargets::Modules(vec!["q_proj".into(), "v_proj".into()])
        );
        assert_eq!(
            LoraTargets::parse(&["q_proj", "all-linear"]).unwrap(),
            LoraTargets::AllLinear
        );
        let err = LoraTargets::parse(&["q_proj", "qq_proj"]).unwrap_err();
        assert_eq!(err.field, "lora_target_modules[1]");
        assert_eq!(
            LoraTargets::parse::<&str>(&[]).unwrap_err().field,
            "lora_target_modules"
        );
        let json = serde_json::to_string(&LoraTargets::AllLinear).unwrap();
        assert_eq!(json, r#"["all-linear"]"#);
        assert!(serde_json::from_str::<LoraTargets>(r#"["nope"]"#).is_err());
        // The router is named with the modules it goes with, never added to all-linear.
        let err = LoraTargets::parse(&["all-linear", "gate"]).unwrap_err();
        assert!(
            err.to_string().contains("never includes the router"),
            "{err}"
        );
        assert_eq!(
            LoraTargets::parse(&["q_proj", "router"]).unwrap(),
            LoraTargets::Modules(vec!["q_proj".into(), "router".into()])
        );
    }
}
