//! Where a worker trains (`device`): `auto`, `cpu`, `cuda` or `cuda:N`. Whether the device is there is
//! the trainer's question (dn-train's `select_device`); this is only the name.

use std::fmt;
use std::str::FromStr;

use crate::error::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum DeviceSpec {
    /// GPU 0 when CUDA works on this node, else the CPU (the default).
    #[default]
    Auto,
    Cpu,
    /// The GPU of this ordinal (`cuda` is `cuda:0`).
    Cuda(usize),
}

impl DeviceSpec {
    pub const FIELD: &'static str = "device";

    /// `auto` (or nothing), `cpu`, `cuda` or `cuda:N`.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let text = text.trim();
        match text {
            "" | "auto" => Ok(DeviceSpec::Auto),
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" => Ok(DeviceSpec::Cuda(0)),
            _ => text
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(DeviceSpec::Cuda)
                .ok_or_else(|| {
                    Error::new(
                        Self::FIELD,
                        format!("{text:?}: expected cpu, cuda, cuda:N or auto"),
                    )
                }),
        }
    }
}

impl FromStr for DeviceSpec {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self, Error> {
        Self::parse(text)
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Auto => f.write_str("auto"),
            DeviceSpec::Cpu => f.write_str("cpu"),
            DeviceSpec::Cuda(ordinal) => write!(f, "cuda:{ordinal}"),
        }
    }
}

impl serde::Serialize for DeviceSpec {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for DeviceSpec {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_spelling_and_names_the_option_otherwise() {
        assert_eq!(DeviceSpec::parse("").unwrap(), DeviceSpec::Auto);
        assert_eq!(DeviceSpec::parse(" cpu ").unwrap(), DeviceSpec::Cpu);
        assert_eq!(DeviceSpec::parse("cuda").unwrap(), DeviceSpec::Cuda(0));
        assert_eq!(DeviceSpec::parse("cuda:3").unwrap(), DeviceSpec::Cuda(3));
        assert_eq!(DeviceSpec::Cuda(3).to_string(), "cuda:3");
        for bad in ["gpu", "cuda:", "cuda:x", "cuda3"] {
            assert_eq!(DeviceSpec::parse(bad).unwrap_err().field, "device", "{bad}");
        }
    }
}
