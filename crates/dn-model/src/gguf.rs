//! Reads the metadata (key-value) section of a GGUF file: enough for the tokenizer, special tokens, chat
//! template and model config. Tensors are left to the trainer.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use crate::error::{Error, Result};

/// A GGUF metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum GgufValue {
    Int(i64),
    Uint(u64),
    Float(f64),
    Bool(bool),
    Str(String),
    Array(Vec<GgufValue>),
}

impl GgufValue {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_u64(&self) -> Option<u64> {
        match self {
            GgufValue::Uint(v) => Some(*v),
            GgufValue::Int(v) => u64::try_from(*v).ok(),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match self {
            GgufValue::Float(v) => Some(*v),
            GgufValue::Int(v) => Some(*v as f64),
            GgufValue::Uint(v) => Some(*v as f64),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            GgufValue::Bool(v) => Some(*v),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[GgufValue]> {
        match self {
            GgufValue::Array(v) => Some(v),
            _ => None,
        }
    }
}

/// The metadata of one GGUF file.
#[derive(Debug, Clone)]
pub struct GgufMetadata {
    pub version: u32,
    pub tensor_count: u64,
    pub values: BTreeMap<String, GgufValue>,
    pub tensors: Vec<TensorInfo>,
    /// Byte offset in the file where tensor data starts (tensor offsets are relative to it).
    pub data_offset: u64,
}

/// Where one tensor's data is, and how it is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    /// GGUF order: `dims[0]` varies fastest (the reverse of a PyTorch shape).
    pub dims: Vec<u64>,
    /// ggml type id (0 F32, 1 F16, 2 Q4_0, 3 Q4_1, 8 Q8_0, ...).
    pub kind: u32,
    pub offset: u64,
}

impl TensorInfo {
    pub fn elements(&self) -> u64 {
        self.dims.iter().product()
    }
}

/// Sizes above these are corrupt files, not models: refuse them instead of allocating.
const MAX_STRING: u64 = 64 << 20;
const MAX_ARRAY: u64 = 16 << 20;
const MAX_KEYS: u64 = 1 << 16;

struct Reader<R> {
    inner: R,
    file: String,
    position: u64,
}

impl<R: Read> Reader<R> {
    fn bad(&self, message: impl Into<String>) -> Error {
        Error::Model {
            path: self.file.clone(),
            message: message.into(),
        }
    }

    fn bytes<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut buf = [0u8; N];
        self.inner
            .read_exact(&mut buf)
            .map_err(|e| self.bad(format!("truncated GGUF metadata: {e}")))?;
        self.position += N as u64;
        Ok(buf)
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.bytes()?))
    }

    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.bytes()?))
    }

    fn string(&mut self) -> Result<String> {
        let len = self.u64()?;
        if len > MAX_STRING {
            return Err(self.bad(format!("string of {len} bytes in GGUF metadata")));
        }
        let mut buf = vec![0u8; len as usize];
        self.inner
            .read_exact(&mut buf)
            .map_err(|e| self.bad(format!("truncated GGUF string: {e}")))?;
        self.position += len;
        String::from_utf8(buf).map_err(|_| self.bad("GGUF string is not UTF-8"))
    }

    fn value(&mut self, kind: u32, depth: u32) -> Result<GgufValue> {
        Ok(match kind {
            0 => GgufValue::Uint(u64::from(self.bytes::<1>()?[0])),
            1 => GgufValue::Int(i64::from(i8::from_le_bytes(self.bytes()?))),
            2 => GgufValue::Uint(u64::from(u16::from_le_bytes(self.bytes()?))),
            3 => GgufValue::Int(i64::from(i16::from_le_bytes(self.bytes()?))),
            4 => GgufValue::Uint(u64::from(self.u32()?)),
            5 => GgufValue::Int(i64::from(i32::from_le_bytes(self.bytes()?))),
            6 => GgufValue::Float(f64::from(f32::from_le_bytes(self.bytes()?))),
            7 => GgufValue::Bool(self.bytes::<1>()?[0] != 0),
            8 => GgufValue::Str(self.string()?),
            9 => {
                if depth > 2 {
                    return Err(self.bad("nested GGUF arrays too deep"));
                }
                let item_kind = self.u32()?;
                let len = self.u64()?;
                if len > MAX_ARRAY {
                    return Err(self.bad(format!("array of {len} items in GGUF metadata")));
                }
                let mut items = Vec::with_capacity(len as usize);
                for _ in 0..len {
                    items.push(self.value(item_kind, depth + 1)?);
                }
                GgufValue::Array(items)
            }
            10 => GgufValue::Uint(self.u64()?),
            11 => GgufValue::Int(i64::from_le_bytes(self.bytes()?)),
            12 => GgufValue::Float(f64::from_le_bytes(self.bytes()?)),
            other => return Err(self.bad(format!("unknown GGUF value type {other}"))),
        })
    }
}

impl GgufMetadata {
    pub fn read(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::Model {
            path: path.display().to_string(),
            message: format!("cannot open: {e}"),
        })?;
        Self::from_reader(
            BufReader::with_capacity(1 << 20, file),
            &path.display().to_string(),
        )
    }

    pub fn from_reader(inner: impl Read, name: &str) -> Result<Self> {
        let mut r = Reader {
            inner,
            file: name.to_owned(),
            position: 0,
        };
        if &r.bytes::<4>()? != b"GGUF" {
            return Err(r.bad("not a GGUF file (bad magic)"));
        }
        let version = r.u32()?;
        if !(2..=3).contains(&version) {
            return Err(r.bad(format!("unsupported GGUF version {version} (2 and 3 are)")));
        }
        let tensor_count = r.u64()?;
        let kv_count = r.u64()?;
        if kv_count > MAX_KEYS {
            return Err(r.bad(format!("{kv_count} metadata keys")));
        }
        let mut values = BTreeMap::new();
        for _ in 0..kv_count {
            let key = r.string()?;
            let kind = r.u32()?;
            let value = r.value(kind, 0)?;
            values.insert(key, value);
        }
        if tensor_count > MAX_ARRAY {
            return Err(r.bad(format!("{tensor_count} tensors")));
        }
        let mut tensors = Vec::with_capacity(tensor_count as usize);
        for _ in 0..tensor_count {
            let name = r.string()?;
            let n_dims = r.u32()?;
            if n_dims > 8 {
                return Err(r.bad(format!("tensor {name} has {n_dims} dimensions")));
            }
            let dims = (0..n_dims).map(|_| r.u64()).collect::<Result<Vec<_>>>()?;
            let kind = r.u32()?;
            let offset = r.u64()?;
            tensors.push(TensorInfo {
                name,
                dims,
                kind,
                offset,
            });
        }
        let alignment = values
            .get("general.alignment")
            .and_then(GgufValue::as_u64)
            .filter(|a| *a > 0)
            .unwrap_or(32);
        let data_offset = r.position.div_ceil(alignment) * alignment;
        Ok(GgufMetadata {
            version,
            tensor_count,
            values,
            tensors,
            data_offset,
        })
    }

    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.values.get(key)
    }

    pub fn str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(GgufValue::as_str)
    }

    pub fn u64(&self, key: &str) -> Option<u64> {
        self.get(key).and_then(GgufValue::as_u64)
    }

    /// The architecture-prefixed key, e.g. `llama.context_length`.
    pub fn arch_u64(&self, suffix: &str) -> Option<u64> {
        let arch = self.str("general.architecture")?;
        self.u64(&format!("{arch}.{suffix}"))
    }

    pub fn strings(&self, key: &str) -> Option<Vec<&str>> {
        self.get(key)?
            .as_array()?
            .iter()
            .map(GgufValue::as_str)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_garbage_without_panicking() {
        for bytes in [
            &b""[..],
            b"GGUF",
            b"NOPE\x03\0\0\0",
            b"GGUF\x03\0\0\0\0\0\0\0\0\0\0\0\xff\xff\xff\xff\xff\xff\xff\xff",
        ] {
            assert!(GgufMetadata::from_reader(bytes, "x.gguf").is_err());
        }
    }
}
