//! Options that take one of a closed set of names: each enum's names, its default and its parse, written
//! once by [`choice!`]. Serialized as its name; deserializing an unknown name is an error that names the
//! option (a stored config with a value this build does not know fails clearly, not silently).

use std::fmt;
use std::str::FromStr;

use crate::error::Error;

macro_rules! choice {
    (
        $(#[$meta:meta])*
        $name:ident, field: $field:literal, default: $default:ident,
        { $( $(#[$vmeta:meta])* $variant:ident = $text:literal ),+ $(,)? }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant ),+
        }

        impl $name {
            /// The option's name, as the wire and the CLI (with dashes) call it.
            pub const FIELD: &'static str = $field;
            /// Every name it takes, in the order help texts list them.
            pub const NAMES: &'static [&'static str] = &[$($text),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $text ),+
                }
            }

            /// The value named `text`; anything else is an error naming the option and its values.
            pub fn parse(text: &str) -> Result<Self, Error> {
                match text {
                    $( $text => Ok($name::$variant), )+
                    other => Err(Error::unknown($field, other, Self::NAMES)),
                }
            }
        }

        impl Default for $name {
            fn default() -> Self {
                $name::$default
            }
        }

        impl FromStr for $name {
            type Err = Error;

            fn from_str(text: &str) -> Result<Self, Error> {
                Self::parse(text)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                Self::parse(&text).map_err(serde::de::Error::custom)
            }
        }
    };
}

choice! {
    /// What the loss covers (`train_on`).
    TrainOn, field: "train_on", default: Assistant, {
        /// Every assistant message but those of weight 0 (the reference's).
        Assistant = "assistant",
        /// Only each conversation's last assistant message (unless its weight is 0).
        LastAssistant = "last_assistant",
        /// Every token of the rendering (continued pre-training on chats); weights do not apply.
        All = "all",
    }
}

choice! {
    /// How the frozen base is held in memory (`base_quantization`).
    BaseQuantization, field: "base_quantization", default: AsStored, {
        /// As the checkpoint stores it: a GGUF's block types and bitsandbytes' 4-bit weights stay
        /// quantized, anything else dense.
        AsStored = "as_stored",
        /// Every weight decoded at load (the memory of the unquantized model).
        None = "none",
        /// The projections quantized at load to NF4 as bitsandbytes' `quantize_4bit` would store them
        /// (blocks of 64, an f32 scale each): QLoRA from a bf16/f32 checkpoint.
        Nf4 = "nf4",
        /// The projections quantized at load to ggml's Q8_0 (blocks of 32, an f16 scale each).
        Q8_0 = "q8_0",
    }
}

choice! {
    /// An experiment tracker a job reports to (`report_to`, a list; `none` or absent: none).
    Tracker, field: "report_to", default: TensorBoard, {
        /// Event files (`events.out.tfevents.*`) in every checkpoint directory: each step's scalars and
        /// the eval losses, for `tensorboard --logdir` (and what other trackers import).
        TensorBoard = "tensorboard",
        /// A run on the worker's MLflow tracking server (`MLFLOW_TRACKING_URI`), through its REST API:
        /// the config as params, every step's metrics, the eval loss, the final adapter, the job's status.
        Mlflow = "mlflow",
    }
}

choice! {
    /// How the learning rate moves over the run (`lr_scheduler`), after any warmup.
    LrSchedule, field: "lr_scheduler", default: Constant, {
        /// The reference's: the same rate at every step.
        Constant = "constant",
        /// Linear decay to 0 at the last step.
        Linear = "linear",
        /// Cosine decay to 0 at the last step.
        Cosine = "cosine",
    }
}

choice! {
    /// A dataset's file format (dataset.yaml's `format`). The registry takes every one; training reads
    /// all but arrow ([`DataFormat::is_readable`]).
    DataFormat, field: "format", default: Jsonl, {
        Parquet = "parquet",
        Csv = "csv",
        Arrow = "arrow",
        Json = "json",
        Jsonl = "jsonl",
    }
}

impl DataFormat {
    /// Whether rows can be read from files of this format.
    pub fn is_readable(self) -> bool {
        self != DataFormat::Arrow
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_name_the_option() {
        for name in TrainOn::NAMES {
            let value = TrainOn::parse(name).unwrap();
            assert_eq!(value.as_str(), *name);
            let json = serde_json::to_string(&value).unwrap();
            assert_eq!(serde_json::from_str::<TrainOn>(&json).unwrap(), value);
        }
        assert_eq!(TrainOn::default(), TrainOn::Assistant);
        let err = TrainOn::parse("bogus").unwrap_err();
        assert_eq!(err.field, "train_on");
        assert_eq!(
            err.to_string(),
            "train_on: unknown value \"bogus\" (one of assistant, last_assistant, all)"
        );
        let err = serde_json::from_str::<LrSchedule>("\"step\"").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("lr_scheduler: unknown value \"step\""),
            "{err}"
        );
        assert!(!DataFormat::Arrow.is_readable() && DataFormat::Csv.is_readable());
    }
}
